"""Find and load a PyTorch model from a model directory.

A model directory holds exactly one weights file:
- `*.pt2`: a `torch.export` program (its signature comes from the program itself), or an
  AOTInductor package of compiled code (told apart by its contents; signature: model.json);
- `*.pt` / `*.pth` / `*.torchscript`: a TorchScript archive, or a state dict when a
  module class is named (`--model_class` or `model_class` in model.json);
and optionally `model.json`, the signature (see signature.py). Anything else is an error
that says what was found, so a bad deployment fails at start-up, not at the first request.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .datatypes import NUMPY_TO_V2
from .errors import first_line
from .signature import Signature, SignatureError, TensorSpec, default_signature, read_signature

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "doubler"
KSERVE_MODEL_MOUNT = Path("/mnt/models")
WEIGHT_SUFFIXES = (".pt2", ".pt", ".pth", ".torchscript")


class ModelLoadError(RuntimeError):
    """The model directory is missing, corrupt or ambiguous; the message says which."""


@dataclass
class LoadedModel:
    module: torch.nn.Module
    signature: Signature
    kind: str  # "torchscript" | "export" | "aoti" | "state_dict"
    path: Path


def resolve_model_dir(model_dir: str | None) -> Path:
    """Where the model lies: `--model_dir`, else `$STORAGE_URI`, else the bundled demo.

    KServe's storage initializer downloads `storageUri` to /mnt/models before the
    container starts, so a remote STORAGE_URI is read from there.
    """
    if model_dir:
        return _local_dir(model_dir, "--model_dir")
    storage_uri = os.environ.get("STORAGE_URI")
    if storage_uri:
        if "://" not in storage_uri or storage_uri.startswith("file://"):
            return _local_dir(storage_uri.removeprefix("file://"), "STORAGE_URI")
        if KSERVE_MODEL_MOUNT.is_dir() and any(KSERVE_MODEL_MOUNT.iterdir()):
            return KSERVE_MODEL_MOUNT
        raise ModelLoadError(
            f"STORAGE_URI={storage_uri} but {KSERVE_MODEL_MOUNT} is empty: run the predictor "
            "under KServe (its storage initializer downloads the model) or pass --model_dir"
        )
    return BUNDLED_MODEL_DIR


def _local_dir(path: str, source: str) -> Path:
    if "://" in path:
        raise ModelLoadError(
            f"{source}={path} is a remote URI; KServe's storage initializer downloads it to "
            f"{KSERVE_MODEL_MOUNT} - pass that directory (or a local path) instead"
        )
    directory = Path(path)
    if not directory.exists():
        raise ModelLoadError(f"{source}={path} does not exist")
    if directory.is_file():
        return directory.parent
    return directory


def find_weights(model_dir: Path) -> Path:
    """The one weights file in model_dir, or an error naming what was (not) found."""
    candidates = sorted(
        p for p in model_dir.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )
    if not candidates:
        found = ", ".join(sorted(p.name for p in model_dir.iterdir())) or "nothing"
        raise ModelLoadError(
            f"no model file in {model_dir} (expected one of *{', *'.join(WEIGHT_SUFFIXES)}; "
            f"found {found})"
        )
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ModelLoadError(
            f"ambiguous model directory {model_dir}: several model files ({names})"
        )
    return candidates[0]


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry their code; plain torch.save archives do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def _is_aoti_package(path: Path) -> bool:
    """An AOTInductor package (`torch._inductor.aoti_compile_and_package`) carries compiled
    code under data/aotinductor/; a torch.export archive carries a graph instead."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/data/aotinductor/" in f"/{name}" for name in archive.namelist())


class AOTIPackage(torch.nn.Module):
    """An AOTInductor package as a module: ahead-of-time compiled code, called like the
    program it was compiled from. It carries no graph to read a signature from, so its
    inputs come from model.json (else one input, input-0)."""

    def __init__(self, path: Path, device: torch.device) -> None:
        super().__init__()
        self.path = path
        index = device.index if device.type == "cuda" and device.index is not None else -1
        self.runner = torch._inductor.aoti_load_package(str(path), device_index=index)

    def forward(self, *tensors: torch.Tensor):  # type: ignore[no-untyped-def]
        return self.runner(*tensors)

    def to(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        """Compiled for its dtypes and device: nothing to move."""
        dtype = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
        if dtype is not None:
            raise ModelLoadError(
                f"{self.path} is compiled ahead of time for its own dtypes; --dtype cannot "
                "change it (compile it for the dtype wanted)"
            )
        return self


def import_class(spec: str) -> type[torch.nn.Module]:
    """`package.module:Class` -> the class, with a clear error for each way it can fail."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ModelLoadError(f"model class {spec!r} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelLoadError(f"cannot import {module_name!r} for model class: {error}") from None
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise ModelLoadError(f"{spec!r} is not a torch.nn.Module subclass")
    return cls


def _export_signature(program: torch.export.ExportedProgram) -> Signature:
    """Input/output names, dtypes and shapes off an exported program's graph, with the
    bounds of each dynamic dimension (`Dim("batch", min=1, max=64)`) and the symbols that
    tie dimensions of different inputs together."""

    def bound(size: torch.SymInt) -> tuple[str | None, tuple[int, int | None] | None]:
        expr = size.node.expr
        if not getattr(expr, "is_Symbol", False):
            return None, None  # derived (2 * batch, ...): left to the program's own guards
        ranges = program.range_constraints.get(expr)
        low = _finite_int(getattr(ranges, "lower", 0)) or 0
        if low == 2:
            # torch's own floor for Dim.DYNAMIC/AUTO (sizes 0 and 1 are specialised at export
            # time, yet the program runs on them), not the model's: no lower bound.
            low = 0
        high = _finite_int(getattr(ranges, "upper", None))
        return str(expr), ((low, high) if low > 0 or high is not None else None)

    def spec(name: str, value: object, declared: bool) -> TensorSpec:
        if not isinstance(value, torch.Tensor):
            return TensorSpec(name)
        numpy_dtype = torch.empty((), dtype=value.dtype).numpy().dtype
        shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
        dims = [(None, None) if isinstance(d, int) else bound(d) for d in value.shape]
        return TensorSpec(
            name,
            NUMPY_TO_V2.get(numpy_dtype, "FP32"),
            shape,
            declared_datatype=declared,
            declared_shape=declared,
            bounds=tuple(b for _, b in dims) if any(b for _, b in dims) else (),
            symbols=tuple(s for s, _ in dims) if any(s for s, _ in dims) else (),
            example_shape=_example_shape(value),
        )

    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [
        node
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in user_inputs
    ]
    inputs = [spec(node.name, node.meta.get("val"), True) for node in placeholders]
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    results = output_node.args[0] if isinstance(output_node.args[0], (list, tuple)) else []
    outputs = [
        spec(f"output-{i}", getattr(node, "meta", {}).get("val"), False)
        for i, node in enumerate(results)
    ]
    return Signature(inputs or [TensorSpec("input-0")], outputs)


def _example_shape(value: torch.Tensor) -> tuple[int, ...]:
    """The shape of the example the program was exported with, when torch kept it."""
    try:
        return tuple(d if isinstance(d, int) else int(d.node.hint) for d in value.shape)
    except (AttributeError, TypeError, ValueError):
        return ()


def _finite_int(value: object) -> int | None:
    """A sympy bound as an int; None for infinity (torch's int_oo, sympy's oo)."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None
    return number if abs(number) < 2**62 else None


def _forward_arity(module: torch.nn.Module) -> int:
    """How many tensors forward() takes, for models that come without model.json."""
    try:
        if isinstance(module, torch.jit.ScriptModule):
            return max(1, len(module.forward.schema.arguments) - 1)  # type: ignore[attr-defined]
        parameters = inspect.signature(module.forward).parameters.values()
        return max(
            1, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
        )
    except (AttributeError, TypeError, ValueError):
        return 1


def load_model(model_dir: Path, model_class: str | None, device: torch.device) -> LoadedModel:
    """Load the one model in model_dir onto device, with its signature."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} is not a directory")
    try:
        signature = read_signature(model_dir)
    except SignatureError as error:
        raise ModelLoadError(str(error)) from None
    weights = find_weights(model_dir)
    model_class = model_class or (signature.extras.get("model_class") if signature else None)
    # A module class shipped beside the weights can be imported by name.
    if str(model_dir) not in sys.path:
        sys.path.insert(0, str(model_dir))
    module: torch.nn.Module
    try:
        if weights.suffix == ".pt2" and _is_aoti_package(weights):
            module = AOTIPackage(weights, device)
            kind = "aoti"
        elif weights.suffix == ".pt2":
            program = torch.export.load(str(weights))
            module = program.module().to(device)
            kind = "export"
            signature = _with_program(signature, _export_signature(program))
        elif model_class:
            module = _load_state_dict(weights, model_class, signature, device)
            kind = "state_dict"
        elif _is_torchscript(weights):
            module = torch.jit.load(str(weights), map_location=device)
            kind = "torchscript"
        else:
            raise ModelLoadError(
                f"{weights} is not a TorchScript archive; if it is a state dict, name its module "
                "class with --model_class package.module:Class (or model_class in model.json)"
            )
    except ModelLoadError:
        raise
    except Exception as error:  # torch raises many types for a corrupt file
        raise ModelLoadError(f"cannot load {weights}: {first_line(error)}") from None
    if isinstance(module, torch.nn.Module) and kind not in ("export", "aoti"):
        module.eval()
    if signature is None:
        signature = default_signature(_forward_arity(module))
    elif not signature.inputs:
        signature.inputs = default_signature(_forward_arity(module)).inputs
    return LoadedModel(module, signature, kind, weights)


def _with_program(declared: Signature | None, program: Signature) -> Signature:
    """model.json's signature, taking from the exported program what it does not declare
    (the inputs with their bounds, the outputs), so that a model.json that only adds a
    handler, a decoder or labels keeps what the program knows."""
    if declared is None:
        return program
    only_decoded = all(
        spec.name in declared.decoded and not spec.declared_shape for spec in declared.inputs
    )
    if only_decoded:
        declared.inputs = program.inputs
    declared.outputs = declared.outputs or program.outputs
    return declared


def _load_state_dict(
    weights: Path, model_class: str, signature: Signature | None, device: torch.device
) -> torch.nn.Module:
    cls = import_class(model_class)
    kwargs = (signature.extras.get("model_kwargs") if signature else None) or {}
    state = torch.load(str(weights), map_location=device, weights_only=True)
    if not isinstance(state, dict):
        raise ModelLoadError(
            f"{weights} is not a state dict (got {type(state).__name__}); save it with "
            "torch.save(model.state_dict(), path)"
        )
    module = cls(**kwargs)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        # torch lists every missing, unexpected and mis-shaped key: all of it is needed.
        raise ModelLoadError(f"{weights} does not fit {model_class}: {error}") from None
    return module.to(device)
