"""What a model takes and gives: named tensors with a V2 datatype and a shape.

The signature comes from `model.json` beside the weights, or from a `torch.export`
program's own graph; it drives V2 metadata, input-name checks and the warm-up inference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .datatypes import V2_TO_NUMPY

SIGNATURE_FILE = "model.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str = "FP32"
    shape: tuple[int, ...] = (-1,)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # Extra settings that may travel in model.json (model_class, model_kwargs).
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def output_name(self, index: int) -> str:
        return self.outputs[index].name if index < len(self.outputs) else f"output-{index}"


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
    return TensorSpec(entry["name"], datatype, tuple(shape))


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
    inputs = [_spec(e, f"{path} inputs") for e in document.get("inputs", [])]
    outputs = [_spec(e, f"{path} outputs") for e in document.get("outputs", [])]
    extras = {k: v for k, v in document.items() if k not in ("inputs", "outputs")}
    return Signature(inputs or [TensorSpec("input-0")], outputs, extras)


def default_signature(input_count: int = 1) -> Signature:
    """What a model with no model.json is assumed to take: FP32 vectors named input-N."""
    return Signature([TensorSpec(f"input-{i}") for i in range(input_count)], [])
