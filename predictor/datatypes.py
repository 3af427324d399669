"""The Open Inference Protocol datatypes and their numpy and torch equivalents.

One table, so every codec (V1, V2 JSON, V2 binary, gRPC) agrees on what each name means.
"""

from __future__ import annotations

import numpy as np
import torch
from kserve.errors import InvalidInput

# V2 datatype name -> numpy dtype (little-endian, as the binary extension sends it).
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

NUMPY_TO_V2: dict[np.dtype, str] = {dtype: name for name, dtype in V2_TO_NUMPY.items()}

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

SUPPORTED = ", ".join(V2_TO_NUMPY)


def numpy_dtype(datatype: str, where: str) -> np.dtype:
    """The numpy dtype of a V2 datatype name, or a 400 naming the bad one and where it was."""
    try:
        return V2_TO_NUMPY[datatype]
    except (KeyError, TypeError):
        if datatype == "BYTES":
            raise InvalidInput(
                f"{where}: a BYTES tensor has no fixed-size elements; the module takes "
                f"one of {SUPPORTED}"
            ) from None
        raise InvalidInput(
            f"{where}: unknown datatype {datatype!r}; expected one of {SUPPORTED}"
        ) from None


def v2_datatype(array: np.ndarray) -> str:
    """The V2 datatype name of a numpy array's dtype (object and string arrays: BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return NUMPY_TO_V2[array.dtype]
    except KeyError:
        raise InvalidInput(f"the model produced an unsupported dtype {array.dtype}") from None
