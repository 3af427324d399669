"""Run tritonclient's gRPC client in a process of its own and print what it got, as JSON.

tritonclient.grpc and kserve register the same protobuf symbols (`inference.*`) in
protobuf's global pool, so they cannot be imported into one process; the tests start
this script to call the server with the real tritonclient.

    python tests/triton_grpc_client.py TARGET MODEL REQUEST_JSON
REQUEST_JSON: {"inputs": [{"name", "datatype", "shape", "data"}]}, and optionally
"outputs": [{"name", "class_count"?}] (the outputs to ask for; without it, all); BYTES data
(in and out) travel as base64 strings, since JSON has no bytes.
"""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def main(target: str, model: str, request: dict) -> dict:
    client = grpcclient.InferenceServerClient(target)
    result: dict = {
        "live": client.is_server_live(),
        "ready": client.is_model_ready(model),
        "metadata": client.get_model_metadata(model, as_json=True),
    }
    inputs = []
    for spec in request["inputs"]:
        infer_input = grpcclient.InferInput(spec["name"], spec["shape"], spec["datatype"])
        if spec["datatype"] == "BYTES":
            array = np.array([base64.b64decode(v) for v in spec["data"]], dtype=object)
        else:
            array = np.array(spec["data"], dtype=triton_to_np_dtype(spec["datatype"]))
        infer_input.set_data_from_numpy(array.reshape(spec["shape"]))
        inputs.append(infer_input)
    requested = None
    if "outputs" in request:
        requested = [
            grpcclient.InferRequestedOutput(spec["name"], class_count=spec.get("class_count", 0))
            for spec in request["outputs"]
        ]
    try:
        response = client.infer(model, inputs, outputs=requested)
    except InferenceServerException as error:
        result["error"] = {"status": error.status(), "message": error.message()}
        return result
    outputs = response.get_response(as_json=True)["outputs"]
    result["outputs"] = {
        o["name"]: {
            "datatype": o["datatype"],
            "shape": [int(d) for d in o.get("shape", [])],
            "data": _jsonable(response.as_numpy(o["name"])),
        }
        for o in outputs
    }
    return result


def _jsonable(array: np.ndarray) -> list:
    if array.dtype == object:
        return [base64.b64encode(v).decode() for v in array.reshape(-1)]
    return array.tolist()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))))
