"""The "stock" baseline: a plain `kserve.Model` doing x*2 the way KServe's samples do.

V1: `{"instances": [...]}` -> numpy -> x*2 -> `{"predictions": result.tolist()}`.
V2 (REST JSON, REST binary, gRPC): `InferRequest.inputs[0].as_numpy()` -> x*2 ->
`InferOutput.set_data_from_numpy` -> `InferResponse`. Nothing here is tuned: it is what a
user following the KServe docs would write, served by KServe's own ModelServer.

Run: python benchmarks/baselines/stock_kserve.py --model_name model --http_port 8080
"""

from __future__ import annotations

import argparse

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.utils.utils import generate_uuid


class Doubler(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            result = payload.inputs[0].as_numpy() * 2
            output = InferOutput(name="output-0", shape=list(result.shape), datatype="FP32")
            output.set_data_from_numpy(result, binary_data=payload.use_binary_outputs)
            return InferResponse(
                response_id=payload.id or generate_uuid(),
                model_name=self.name,
                infer_outputs=[output],
                use_binary_outputs=payload.use_binary_outputs,
            )
        instances = np.asarray(payload["instances"], dtype=np.float32)
        return {"predictions": (instances * 2).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    ModelServer().start([Doubler(args.model_name)])


if __name__ == "__main__":
    main()
