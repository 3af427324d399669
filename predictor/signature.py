"""What a model takes and gives: named tensors with a V2 datatype and a shape.

The signature comes from `model.json` beside the weights, or from a `torch.export`
program's own graph (with the bounds of its dynamic dimensions); it drives V2 metadata,
the warm-up inference, and the checks every request passes before the model runs
(`Signature.conform`): names, rank, fixed and bounded dimensions, dimensions that must
agree across inputs, and datatypes. What is not declared (a model.json tensor without
"datatype" or "shape", a TorchScript model without model.json) is passed as sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from .datatypes import NUMPY_TO_V2, V2_TO_NUMPY

SIGNATURE_FILE = "model.json"


Bound = tuple[int, int | None]  # a dynamic dimension's lowest and highest size (None: any)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str = "FP32"
    shape: tuple[int, ...] = (-1,)  # -1: a dynamic dimension
    # Whether requests are held to the datatype and shape; undeclared ones run as sent.
    declared_datatype: bool = False
    declared_shape: bool = False
    # Per dimension (torch.export): the bounds of a dynamic dimension when it has any, and
    # the symbol naming it, which other inputs' dimensions may share (they must be equal).
    bounds: tuple[Bound | None, ...] = ()
    symbols: tuple[str | None, ...] = ()
    # A shape the model is known to take (torch.export's example input), for the warm-up.
    example_shape: tuple[int, ...] = ()

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def expected(self) -> str:
        """The shape as a client should read it, with any bounds of its dimensions."""
        text = f"shape {list(self.shape)}"
        limits = [
            f"dimension {axis} " + (f"in {low}..{high}" if high is not None else f">= {low}")
            for axis, bound in enumerate(self.bounds)
            if bound is not None
            for low, high in [bound]
        ]
        return f"{text} with {' and '.join(limits)}" if limits else text

    def check_shape(self, shape: tuple[int, ...]) -> None:
        fits = len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )
        if fits and self.bounds:
            fits = all(
                bound is None or (bound[0] <= got and (bound[1] is None or got <= bound[1]))
                for bound, got in zip(self.bounds, shape, strict=False)
            )
        if not fits:
            raise InvalidInput(
                f"input {self.name!r}: expected {self.expected()}, got {list(shape)}"
            )

    def cast(self, array: np.ndarray) -> np.ndarray:
        """The array in the declared datatype, converted when no value changes kind:
        booleans and integers to floats, integers to other integers when every value
        fits, floats to other floats. Anything else is the client's error."""
        target = V2_TO_NUMPY[self.datatype]
        if array.dtype == target:
            return array
        given, want = array.dtype.kind, target.kind
        if want == "f" and given in "biuf":
            return array.astype(target)
        if want in "iu" and given in "biu":
            info = np.iinfo(target)
            if given != "b" and array.size and (array.min() < info.min or array.max() > info.max):
                raise InvalidInput(
                    f"input {self.name!r}: expected datatype {self.datatype}, got "
                    f"{NUMPY_TO_V2.get(array.dtype, array.dtype)} with values outside "
                    f"{info.min}..{info.max}"
                )
            return array.astype(target)
        sent = NUMPY_TO_V2.get(array.dtype, str(array.dtype))
        raise InvalidInput(
            f"input {self.name!r}: expected datatype {self.datatype}, got {sent} "
            f"({sent} values cannot be converted to {self.datatype} without changing them)"
        )


DECODER_KINDS = ("image", "text")


@dataclass
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # Extra settings that may travel in model.json (model_class, model_kwargs, handler).
    extras: dict[str, Any] = field(default_factory=dict)
    # Inputs the server decodes before the module sees them (decoders.py): the name clients
    # send -> (kind, its model.json settings).
    decoded: dict[str, tuple[str, dict]] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def output_name(self, index: int) -> str:
        return self.outputs[index].name if index < len(self.outputs) else f"output-{index}"

    def conform(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The inputs (in forward() order) checked against what the model declares and
        converted to its datatypes, or InvalidInput saying what was expected and what came."""
        shared: dict[str, tuple[str, int, int]] = {}  # symbol -> (input, axis, size)
        conformed = []
        for spec, array in zip(self.inputs, arrays, strict=True):
            if spec.declared_shape:
                spec.check_shape(array.shape)
                for axis, symbol in enumerate(spec.symbols):
                    if symbol is None:
                        continue
                    first = shared.setdefault(symbol, (spec.name, axis, array.shape[axis]))
                    if first[2] != array.shape[axis]:
                        raise InvalidInput(
                            f"input {spec.name!r}: dimension {axis} is {array.shape[axis]}, but "
                            f"input {first[0]!r} dimension {first[1]} is {first[2]}; the model "
                            "needs them equal"
                        )
            conformed.append(spec.cast(array) if spec.declared_datatype else array)
        return conformed

    def batch_limit(self) -> int | None:
        """The most rows a forward call may take (a fixed first dimension, or the upper
        bound of a dynamic one), None when the signature sets no limit."""
        limits = []
        for spec in self.inputs:
            if not spec.declared_shape or not spec.shape:
                continue
            if spec.shape[0] >= 0:
                limits.append(spec.shape[0])
            elif spec.bounds and spec.bounds[0] is not None and spec.bounds[0][1] is not None:
                limits.append(spec.bounds[0][1])
        return min(limits, default=None)

    def learn_outputs(self, outputs: dict[str, np.ndarray]) -> None:
        """Outputs nobody declared, named and typed as the warm-up inference gave them
        (the first dimension taken as the batch)."""
        if self.outputs:
            return
        self.outputs = [
            TensorSpec(name, NUMPY_TO_V2.get(a.dtype, "FP32"), (-1, *a.shape[1:]) if a.ndim else ())
            for name, a in outputs.items()
        ]


class SignatureError(ValueError):
    """model.json is present but does not describe tensors the way it must."""


def _spec(entry: Any, where: str) -> TensorSpec:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise SignatureError(f"{where}: each tensor needs a string 'name'")
    datatype = entry.get("datatype", "FP32")
    if datatype not in V2_TO_NUMPY:
        raise SignatureError(f"{where}: unknown datatype {datatype!r} for {entry['name']!r}")
    shape = entry.get("shape", [-1])
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
    ):
        raise SignatureError(f"{where}: shape of {entry['name']!r} must be a list of ints >= -1")
    return TensorSpec(
        entry["name"],
        datatype,
        tuple(shape),
        declared_datatype="datatype" in entry,
        declared_shape="shape" in entry,
    )


def read_signature(model_dir: Path) -> Signature | None:
    """The signature in `model_dir/model.json`, or None when there is no such file."""
    path = model_dir / SIGNATURE_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SignatureError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise SignatureError(f"{path}: must be a JSON object")
    entries = document.get("inputs", [])
    if not isinstance(entries, list):
        raise SignatureError(f"{path}: 'inputs' must be a list")
    inputs, decoded = [], {}
    for entry in entries:
        kinds = [kind for kind in DECODER_KINDS if isinstance(entry, dict) and kind in entry]
        if len(kinds) > 1:
            raise SignatureError(f"{path} inputs: {entry.get('name')!r} is both image and text")
        if kinds:
            settings = entry[kinds[0]]
            if not isinstance(settings, dict) or not isinstance(entry.get("name"), str):
                raise SignatureError(
                    f"{path} inputs: a {kinds[0]} input needs a string 'name' and an object "
                    f"'{kinds[0]}' of settings"
                )
            decoded[entry["name"]] = (kinds[0], settings)
            if kinds[0] == "text":
                continue  # it feeds other inputs (token ids, mask), which are the module's
        inputs.append(_spec(entry, f"{path} inputs"))
    outputs = [_spec(e, f"{path} outputs") for e in document.get("outputs", [])]
    extras = {k: v for k, v in document.items() if k not in ("inputs", "outputs")}
    return Signature(inputs, outputs, extras, decoded)


def default_signature(input_count: int = 1) -> Signature:
    """What a model with no model.json is assumed to take: FP32 vectors named input-N."""
    return Signature([TensorSpec(f"input-{i}") for i in range(input_count)], [])
