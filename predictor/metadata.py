"""What the server says about itself and its models, the same on REST and gRPC.

- Server metadata lists exactly the protocol extensions implemented here: the binary
  tensor extension (Triton's name, `binary_tensor_data`), Triton's `classification`
  (classification.py) and `statistics` (statistics.py). KServe's model repository
  extension is not listed: this server serves one model for its lifetime, so its load and
  unload are refused (a client must not be able to unload the model of a replica).
- Model metadata follows the Open Inference Protocol's `metadata_model_response`:
  `versions` is left out (models are served unversioned), never null.
"""

from __future__ import annotations

from importlib import metadata as package_metadata

from kserve.constants.constants import KSERVE_MODEL_SERVER_NAME

EXTENSIONS = ["binary_tensor_data", "classification", "statistics"]

MODEL_CONTROL_DISABLED = (
    "model load and unload are disabled: this server serves model {name!r} for its lifetime; "
    "roll out a new version instead"
)


def server_metadata() -> dict:
    return {
        "name": KSERVE_MODEL_SERVER_NAME,
        "version": package_metadata.version("kserve"),
        "extensions": EXTENSIONS,
    }


def model_metadata(model) -> dict:
    return {
        "name": model.name,
        "platform": "",
        "inputs": model.get_input_types(),
        "outputs": model.get_output_types(),
    }
