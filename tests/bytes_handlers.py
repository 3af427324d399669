"""Handlers (TorchModel subclasses) for the tests: BYTES in and out on every protocol.

Served with `--handler tests.bytes_handlers:Echo` (or copied beside a model and named by
module), around the bundled doubler.
"""

from __future__ import annotations

import numpy as np
from kserve.errors import InvalidInput

from predictor.model import TorchModel


def only_input(payload: dict) -> np.ndarray:
    if len(payload) != 1:
        raise InvalidInput(f"this handler takes one input, got {sorted(payload)}")
    return next(iter(payload.values()))


class Echo(TorchModel):
    """Answers its one BYTES input unchanged (output "echo"): the bytes round trip."""

    async def predict(self, payload, headers=None, response_headers=None):
        return {"echo": only_input(payload)}


class TextStats(TorchModel):
    """Strings in; the doubler doubles each one's byte count; postprocess labels each
    string "short" or "long" (a BYTES output) beside the FP32 doubled length."""

    async def preprocess(self, payload, headers=None):
        texts = only_input(payload)
        if texts.dtype != object:
            raise InvalidInput("this handler takes BYTES (strings)")
        lengths = np.array([len(text) for text in texts.reshape(-1)], dtype=np.float32)
        return {"input-0": lengths.reshape(texts.shape)}

    async def postprocess(self, result, headers=None, response_headers=None):
        doubled = result["output-0"]
        labels = np.array([b"long" if n > 10 else b"short" for n in doubled.reshape(-1)], object)
        return {"doubled_length": doubled, "label": labels.reshape(doubled.shape)}

    def get_input_types(self) -> list[dict]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": "doubled_length", "datatype": "FP32", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ]


class NotAModel:
    """Not a TorchModel: --handler must refuse it."""
