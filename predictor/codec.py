"""Wire formats <-> numpy arrays, with no Python loop per element.

V1 JSON, V2 JSON and the V2 binary tensor extension are decoded straight into numpy
(orjson + numpy for JSON, `np.frombuffer` for binary) and encoded back the same way;
BYTES tensors (object arrays of `bytes`) take their own forms (bytes_tensors.py).
Every check that fails raises `kserve.errors.InvalidInput` with a message naming the
input and what is wrong with it, which KServe turns into a 400.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import simdjson
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from . import bytes_tensors, classification
from .bytes_tensors import BYTES
from .datatypes import V2_TO_NUMPY, numpy_dtype, v2_datatype
from .grpc_wire import with_raw_contents

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
HEADER_LENGTH = "inference-header-content-length"


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("empty request body; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"malformed JSON: {error}") from None


def dumps(document: Any) -> bytes:
    return orjson.dumps(document, option=JSON_OPTIONS)


def array_from_json(
    data: Any, datatype: str | None, where: str, booleans: bool = True
) -> np.ndarray:
    """A JSON (nested) list as a numpy array, checked for raggedness and value types.

    With a datatype, values must fit it: integers for integer types (in range), numbers
    for float types, booleans for BOOL. Without one (V1 and /api/predict, which carry no
    types), numpy infers int64, float64 or bool, as torch.tensor(values) would; with
    `booleans=False` (/api/predict) only numbers are taken.
    """
    target = None if datatype is None else numpy_dtype(datatype, where)
    try:
        raw = np.asarray(data)
    except (ValueError, OverflowError) as error:
        raise InvalidInput(f"{where}: ragged or malformed nested list ({error})") from None
    if raw.dtype.kind not in ("biuf" if booleans else "iuf"):
        if raw.size == 0 and datatype is None:
            return raw.astype(np.float32)
        expected = "numbers or booleans" if booleans else "numbers"
        kind = "booleans" if raw.dtype.kind == "b" else _kind(raw)
        raise InvalidInput(f"{where}: values must be {expected}, not {kind}")
    if target is None or datatype is None:
        return raw
    if raw.size == 0:
        return raw.astype(target)
    return _fit(data, raw, target, datatype, where)


def _kind(raw: np.ndarray) -> str:
    return {"U": "strings", "S": "strings", "O": "nulls, objects or out-of-range integers"}.get(
        raw.dtype.kind, str(raw.dtype)
    )


def _fit(data: Any, raw: np.ndarray, target: np.dtype, datatype: str, where: str) -> np.ndarray:
    """`raw` (numpy's own reading of the values) as `target`, exactly, or a 400."""
    kind = raw.dtype.kind
    if target.kind == "b":
        if kind != "b":
            raise InvalidInput(f"{where}: datatype BOOL takes true/false values, got {raw.dtype}")
    elif target.kind in "iu":
        info = np.iinfo(target)
        out_of_range = InvalidInput(
            f"{where}: value out of range for {datatype} ({info.min}..{info.max})"
        )
        if kind == "f":
            # Fractions, or 64-bit integers numpy could only read as (inexact) floats.
            if not np.all(np.isfinite(raw)) or not np.array_equal(raw, np.trunc(raw)):
                raise InvalidInput(f"{where}: datatype {datatype} takes integers, got fractions")
            try:  # read the values again, exactly, straight into the target type
                with np.errstate(all="ignore"):
                    exact = np.array(data, dtype=target)
            except (OverflowError, ValueError):
                raise out_of_range from None
            if not np.array_equal(exact.astype(np.float64), raw):
                raise out_of_range
            return exact.view(target)
        if kind in "iu" and (raw.min() < info.min or raw.max() > info.max):
            raise out_of_range
    # view(): numpy may keep an equal but distinct dtype (ulonglong for uint64) torch refuses.
    return raw.astype(target, copy=False).view(target)


def check_shape(shape: Any, where: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def reshape(array: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    expected = math.prod(shape)
    if array.size != expected:
        raise InvalidInput(
            f"{where}: shape {list(shape)} needs {expected} values, but data has {array.size}"
        )
    return array.reshape(shape)


@dataclass
class V2Request:
    """A decoded V2 inference request: named numpy inputs plus what the client asked back."""

    id: str
    inputs: dict[str, np.ndarray]
    # Output names the client asked for (None: all), and which of them go back as binary:
    # an output's own `binary_data` parameter overrides the request's `binary_data_output`.
    requested_outputs: list[str] | None = None
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    binary_by_default: bool = False
    # Outputs to return as their top-k classes (classification.py): name -> k.
    classification: dict[str, int] = field(default_factory=dict)

    def wants_binary(self, name: str) -> bool:
        return self.binary_outputs.get(name, self.binary_by_default)


def _input_entries(header: Any) -> list[dict]:
    if not isinstance(header, dict):
        raise InvalidInput('expected a JSON object with an "inputs" list')
    entries = header.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput('"inputs" must be a non-empty list of tensors')
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput(f"inputs[{i}]: each input needs a string 'name'")
        for key in ("datatype", "shape"):
            if key not in entry:
                raise InvalidInput(f"input {entry['name']!r}: missing {key!r}")
    return entries


def _params(entry: dict, where: str) -> dict:
    params = entry.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return params


def _request_options(
    header: dict,
) -> tuple[str, list[str] | None, dict[str, bool], bool, dict[str, int]]:
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    params = _params(header, "request")
    binary_by_default = bool(params.get("binary_data_output", False))
    requested, binary, classes = None, {}, {}
    if "outputs" in header:
        outputs = header["outputs"]
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise InvalidInput("'outputs' must be a list of objects with a string 'name'")
        requested = _unique_outputs([o["name"] for o in outputs])
        for output in outputs:
            where = f"output {output['name']!r}"
            output_params = _params(output, where)
            choice = output_params.get("binary_data")
            if choice is not None:
                binary[output["name"]] = bool(choice)
            if classification.PARAMETER in output_params:
                count = output_params[classification.PARAMETER]
                classes[output["name"]] = classification.class_count(count, where)
    return request_id or str(uuid.uuid4()), requested, binary, binary_by_default, classes


def _unique_outputs(names: list[str]) -> list[str]:
    """Requested output names; one asked for twice is the client's error (as in Triton)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInput(f"output {name!r} is requested more than once")
        seen.add(name)
    return names


def decode_v2_json(header: Any) -> V2Request:
    """A V2 JSON request body (already parsed) -> V2Request."""
    return _build(header, _decode_inputs(header, None))


def decode_v2_binary(body: bytes, header_length: str) -> V2Request:
    """A body in the binary tensor extension: a JSON header, then raw little-endian tensors."""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length!r} is not an integer"
        ) from None
    if not 0 < length <= len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {length} does not fit a body of {len(body)} bytes"
        )
    header = parse_json(body[:length])
    # One copy makes the buffer writable, so torch can take it without copying again.
    return _build(header, _decode_inputs(header, bytearray(body[length:])))


def _build(header: dict, inputs: dict[str, np.ndarray]) -> V2Request:
    request_id, requested, binary, binary_by_default, classes = _request_options(header)
    return V2Request(request_id, inputs, requested, binary, binary_by_default, classes)


def _decode_inputs(header: Any, binary: bytearray | None) -> dict[str, np.ndarray]:
    """Each input from its JSON `data`, or from the binary part (`binary_data_size`)."""
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for entry in _input_entries(header):
        name = entry["name"]
        where = f"input {name!r}"
        if name in inputs:
            raise InvalidInput(f"{where}: given more than once")
        shape = check_shape(entry["shape"], where)
        size = _params(entry, where).get("binary_data_size")
        if size is None:
            if "data" not in entry:
                raise InvalidInput(f"{where}: missing 'data' (or binary_data_size parameter)")
            if entry["datatype"] == BYTES:
                inputs[name] = bytes_tensors.from_json(entry["data"], shape, where)
                continue
            array = array_from_json(entry["data"], entry["datatype"], where)
            inputs[name] = reshape(array, shape, where)
            continue
        if binary is None:
            raise InvalidInput(
                f"{where}: binary_data_size given, but the request has no binary part "
                "(Inference-Header-Content-Length header)"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(
                f"{where}: binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} bytes left)"
            )
        inputs[name] = _from_bytes(binary, offset, size, entry["datatype"], shape, where)
        offset += size
    if binary is not None and offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes after the last binary input")
    return inputs


def _from_bytes(
    buffer: bytes | bytearray | memoryview,
    offset: int,
    size: int,
    datatype: str,
    shape: tuple[int, ...],
    where: str,
) -> np.ndarray:
    """A tensor out of raw little-endian bytes; copied only when torch could not use the
    memory as it is (read-only bytes, or misaligned). BYTES are length-prefixed elements."""
    if datatype == BYTES:
        return bytes_tensors.unpack(memoryview(buffer)[offset : offset + size], shape, where)
    dtype = numpy_dtype(datatype, where)
    count = math.prod(shape)
    if size != count * dtype.itemsize:
        raise InvalidInput(
            f"{where}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"binary_data_size is {size}"
        )
    if dtype.kind == "b":
        return np.frombuffer(buffer, np.uint8, count, offset).astype(np.bool_).reshape(shape)
    array = np.frombuffer(buffer, dtype, count, offset)
    if not array.flags.writeable or offset % dtype.itemsize:
        array = array.copy()
    return array.reshape(shape)


def _selected(outputs: dict[str, np.ndarray], request: V2Request):
    """The outputs the client asked for (all when it named none), C-contiguous."""
    names = request.requested_outputs or list(outputs)
    for name in names:
        if name not in outputs:
            raise InvalidInput(f"unknown output {name!r}; the model gives {list(outputs)}")
    return [(name, _contiguous(outputs[name])) for name in names]


def _contiguous(array: np.ndarray) -> np.ndarray:
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def encode_v2(
    model_name: str, request: V2Request, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """Outputs -> a V2 response body, JSON or with binary outputs, and its headers."""
    entries, chunks = [], []
    for name, array in _selected(outputs, request):
        datatype = v2_datatype(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        where = f"output {name!r}"
        if request.wants_binary(name):
            data = bytes_tensors.pack(array, where) if datatype == BYTES else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        elif datatype == BYTES:
            entry["data"] = bytes_tensors.to_json(array, where)
        else:
            entry["data"] = array.reshape(-1)
        entries.append(entry)
    header = dumps({"model_name": model_name, "id": request.id, "outputs": entries})
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


# The typed `contents` field of each datatype in a gRPC ModelInferRequest (FP16 has none).
GRPC_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_grpc(request: pb.ModelInferRequest, raw: Sequence[memoryview]) -> V2Request:
    """A ModelInferRequest, its raw contents apart (grpc_wire.split_raw_contents) ->
    V2Request: raw contents through np.frombuffer, typed contents checked like JSON."""
    if not request.inputs:
        raise InvalidInput("the request has no inputs")
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: "
            "give one per input, or none"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        where = f"input {tensor.name!r}"
        if tensor.name in inputs:
            raise InvalidInput(f"{where}: given more than once")
        shape = check_shape(list(tensor.shape), where)
        if raw:
            if tensor.contents.ByteSize():
                raise InvalidInput(f"{where}: give raw_input_contents or typed contents, not both")
            content = raw[index]
            inputs[tensor.name] = _from_bytes(
                content, 0, content.nbytes, tensor.datatype, shape, where
            )
            continue
        if tensor.datatype != BYTES:
            numpy_dtype(tensor.datatype, where)
        field = GRPC_CONTENTS.get(tensor.datatype)
        if field is None:
            raise InvalidInput(f"{where}: {tensor.datatype} has no typed contents; send it raw")
        values = list(getattr(tensor.contents, field))
        if tensor.datatype == BYTES:
            inputs[tensor.name] = bytes_tensors.from_elements(values, shape, where)
            continue
        inputs[tensor.name] = reshape(array_from_json(values, tensor.datatype, where), shape, where)
    requested = _unique_outputs([output.name for output in request.outputs]) or None
    classes = {
        output.name: _grpc_class_count(output.parameters[classification.PARAMETER], output.name)
        for output in request.outputs
        if classification.PARAMETER in output.parameters
    }
    return V2Request(request.id, inputs, requested, classification=classes)


def _grpc_class_count(parameter: pb.InferParameter, name: str) -> int:
    """An output's `classification` parameter: an int64_param, as Triton requires."""
    where = f"output {name!r}"
    if parameter.WhichOneof("parameter_choice") != "int64_param":
        raise InvalidInput(
            f"{where}: parameter 'classification' must be an int64_param (how many of the "
            "highest classes to return)"
        )
    return classification.class_count(parameter.int64_param, where)


def encode_grpc(model_name: str, request: V2Request, outputs: dict[str, np.ndarray]) -> bytes:
    """Outputs -> a serialised ModelInferResponse with raw_output_contents, as KServe
    answers, each output copied once (grpc_wire.with_raw_contents)."""
    response = pb.ModelInferResponse(model_name=model_name, id=request.id)
    contents = []
    for name, array in _selected(outputs, request):
        datatype = v2_datatype(array)
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        contents.append(
            bytes_tensors.pack(array, f"output {name!r}") if datatype == BYTES else array
        )
    return with_raw_contents(response, contents)


@dataclass
class V1Request:
    """A decoded V1 request: named numpy inputs, and its "parameters" object (if any)."""

    inputs: dict[str, np.ndarray]
    parameters: dict = field(default_factory=dict)


def decode_v1_body(body: bytes, input_names: list[str], datatypes: list[str | None]) -> V1Request:
    """A V1 request body -> named numpy inputs (see decode_v1) and its parameters."""
    if len(input_names) == 1 and datatypes[0] in FLOAT_DATATYPES:
        flat = _flat_v1_numbers(body)
        if flat is not None:
            return V1Request({input_names[0]: flat.astype(V2_TO_NUMPY[datatypes[0]])})
    document = parse_json(body)
    inputs = decode_v1(document, input_names, datatypes)
    parameters = document.get("parameters")
    return V1Request(inputs, parameters if isinstance(parameters, dict) else {})


FLOAT_DATATYPES = ("FP16", "FP32", "FP64")


def _flat_v1_numbers(body: bytes) -> np.ndarray | None:
    """The numbers of `{"instances": [n, ...]}` (or "inputs"), read by simdjson straight
    into float64 without a Python object per number, or None for any other body, which
    then takes the general path (and gets its precise error message there).

    Only one flat list qualifies: the body has a single "[" (so nothing is nested, which
    simdjson's flattening would hide), and every element is a number (simdjson refuses
    strings, booleans and nulls).
    """
    if body.count(b"[") != 1:
        return None
    try:
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object) or len(document) != 1:
            return None
        key = next(iter(document.keys()))
        values = document[key]
        if key not in ("instances", "inputs") or not isinstance(values, simdjson.Array):
            return None
        if len(values) == 0:
            return None
        return np.frombuffer(values.as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, TypeError, RuntimeError):
        return None


def decode_v1(document: Any, input_names: list[str], datatypes: list[str | None]) -> dict:
    """A V1 body -> named numpy inputs.

    `{"instances": X}` or `{"inputs": X}`; X is the batch for a one-input model, or
    (several inputs) a list of {name: value} rows or a {name: batch} object. Strings and
    `{"b64": "..."}` values are BYTES, whatever the model declares: no number is a string.
    """
    if not isinstance(document, dict):
        raise InvalidInput('expected a JSON object with "instances" or "inputs"')
    keys = [k for k in ("instances", "inputs") if k in document]
    if len(keys) != 1:
        raise InvalidInput('expected a JSON object with exactly one of "instances" or "inputs"')
    key = keys[0]
    value = document[key]
    if isinstance(value, list) and not value:
        raise InvalidInput(f'"{key}" is empty')
    if isinstance(value, list) and all(_is_row(row) for row in value):
        missing = [n for n in input_names if any(n not in row for row in value)]
        if missing:
            raise InvalidInput(f'"{key}": every row needs {input_names}; missing {missing}')
        value = {n: [row[n] for row in value] for n in input_names}
    elif not isinstance(value, dict):
        if len(input_names) == 1:
            return {input_names[0]: _v1_array(value, datatypes[0], f'"{key}"')}
        raise InvalidInput(
            f'"{key}": this model takes inputs {input_names}; send rows of objects or an object'
        )
    datatype_of = dict(zip(input_names, datatypes, strict=True))
    # Unknown names are kept, so the model's input check names them.
    return {
        name: _v1_array(column, datatype_of.get(name), f'"{key}".{name}')
        for name, column in value.items()
    }


def _is_row(value: Any) -> bool:
    """A V1 row of named inputs, not a {"b64": ...} value."""
    return isinstance(value, dict) and set(value) != {"b64"}


def _v1_array(value: Any, datatype: str | None, where: str) -> np.ndarray:
    if bytes_tensors.looks_like_bytes(value):
        return bytes_tensors.from_v1(value, where)
    # Numbers for a BYTES input go on as numbers, for the model to say what it takes.
    return array_from_json(value, None if datatype == BYTES else datatype, where)


def json_value(array: np.ndarray, where: str = "output") -> Any:
    """orjson writes numpy arrays natively, but not 0-d ones or non-contiguous ones; BYTES
    go as strings, or {"b64": ...} where they are not text."""
    if bytes_tensors.is_bytes(array):
        return bytes_tensors.to_v1(array, where)
    return array.item() if array.ndim == 0 else _contiguous(array)


def encode_v1(outputs: dict[str, np.ndarray]) -> bytes:
    if len(outputs) == 1:
        name, array = next(iter(outputs.items()))
        return dumps({"predictions": json_value(array, f"output {name!r}")})
    return dumps(
        {"predictions": {name: json_value(a, f"output {name!r}") for name, a in outputs.items()}}
    )
