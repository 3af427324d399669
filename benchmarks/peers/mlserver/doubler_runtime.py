"""A Seldon MLServer custom runtime doing x*2, the way MLServer's custom runtime docs do.

Started by `benchmarks/harness.py` as `mlserver start benchmarks/peers/mlserver` (with the
ports in environment variables) from its own venv (`.venv-bench-mlserver`).
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Doubler(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        result = NumpyCodec.decode_input(payload.inputs[0]) * 2
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name="output-0", payload=result)],
        )
