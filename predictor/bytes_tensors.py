"""BYTES tensors: numpy object arrays of `bytes`, and their forms on each wire.

- V2 JSON: strings (UTF-8).
- The binary tensor extension and gRPC raw contents: each element as a 4-byte little-endian
  length followed by its bytes, as Triton and KServe lay them out.
- gRPC typed contents: `bytes_contents`, one entry per element.
- V1: strings, or `{"b64": "..."}` for values that are not text.

Elements have their own lengths, so each is handled once in Python; there is no per-byte work.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

BYTES = "BYTES"
_LENGTH = struct.Struct("<I")


def is_bytes(array: np.ndarray) -> bool:
    """Whether an array holds BYTES elements (bytes/str objects, or numpy S/U strings)."""
    return array.dtype.kind in "OSU"


def object_array(values: list, shape: tuple[int, ...]) -> np.ndarray:
    """`values` (flat, bytes) as an object array of `shape`, without numpy reading into them."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape)


def as_bytes(array: np.ndarray, where: str) -> np.ndarray:
    """A handler's BYTES output (object array of bytes/str, or numpy S/U) as bytes objects."""
    flat = array.reshape(-1).tolist()
    for index, value in enumerate(flat):
        if isinstance(value, str):
            flat[index] = value.encode()
        elif not isinstance(value, bytes):
            raise TypeError(f"{where}: element {index} is {type(value).__name__}, not bytes or str")
    return object_array(flat, array.shape)


# ---------------------------------------------------------------- V2 JSON


def from_json(data: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    """V2 JSON `data` of a BYTES input: strings, flat or nested as the shape says."""
    flat = _leaves(data, where)
    for index, value in enumerate(flat):
        if not isinstance(value, str):
            raise InvalidInput(
                f"{where}: datatype BYTES takes strings, got {_json_kind(value)} at element {index}"
            )
        flat[index] = value.encode()
    return _shaped(flat, shape, where)


def to_json(array: np.ndarray, where: str) -> list[str]:
    """A BYTES output as JSON strings; bytes that are not UTF-8 go back only as binary."""
    try:
        return [value.decode() for value in as_bytes(array, where).reshape(-1)]
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{where} holds bytes that are not UTF-8 text; ask for it as binary "
            '(parameters {"binary_data": true}, or binary_data_output)'
        ) from None


# ---------------------------------------------------------------- length-prefixed layout


def pack(array: np.ndarray, where: str) -> bytes:
    """Each element as its 4-byte little-endian length, then its bytes."""
    parts: list[bytes] = []
    for value in as_bytes(array, where).reshape(-1):
        parts += (_LENGTH.pack(len(value)), value)
    return b"".join(parts)


def unpack(
    buffer: bytes | bytearray | memoryview, shape: tuple[int, ...], where: str
) -> np.ndarray:
    """The elements of a length-prefixed buffer holding exactly prod(shape) of them."""
    view = memoryview(buffer).cast("B")
    count = int(np.prod(shape, dtype=np.int64))
    values: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(
                f"{where}: BYTES element {len(values)} is cut short: its 4-byte length prefix "
                f"has only {len(view) - offset} bytes"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(
                f"{where}: BYTES element {len(values)} says {length} bytes, but only "
                f"{len(view) - offset} are left"
            )
        values.append(bytes(view[offset : offset + length]))
        offset += length
        if len(values) > count:
            break
    if len(values) != count:
        raise InvalidInput(
            f"{where}: shape {list(shape)} needs {count} BYTES elements, but the data holds "
            f"{'more' if len(values) > count else len(values)}"
        )
    return object_array(values, shape)


def from_elements(values: list[bytes], shape: tuple[int, ...], where: str) -> np.ndarray:
    """gRPC `bytes_contents`: one entry per element."""
    return _shaped(list(values), shape, where)


# ---------------------------------------------------------------- V1


def looks_like_bytes(value: Any) -> bool:
    """Whether a V1 value (a nested list) holds strings or {"b64": ...} objects."""
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, str) or (isinstance(value, dict) and "b64" in value)


def from_v1(value: Any, where: str) -> np.ndarray:
    """A V1 batch of strings and {"b64": "..."} objects -> a BYTES array."""
    flat = _leaves(value, where)
    for index, item in enumerate(flat):
        if isinstance(item, str):
            flat[index] = item.encode()
        elif isinstance(item, dict) and set(item) == {"b64"} and isinstance(item["b64"], str):
            try:
                flat[index] = base64.b64decode(item["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(
                    f'{where}: element {index} has invalid base64 in "b64"'
                ) from None
        else:
            raise InvalidInput(
                f"{where}: element {index} is {_json_kind(item)}; "
                'expected a string or {"b64": "..."}'
            )
    return _shaped(flat, _shape_of(value), where)


def to_v1(array: np.ndarray, where: str) -> Any:
    """A BYTES output for V1: nested lists of strings, {"b64": ...} where not UTF-8 text."""

    def text(value: bytes) -> Any:
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}

    values = [text(v) for v in as_bytes(array, where).reshape(-1)]
    return object_array(values, array.shape).tolist() if array.ndim else values[0]


# ---------------------------------------------------------------- helpers


def _leaves(data: Any, where: str) -> list:
    """The leaves of a nested list, depth first, checked to be rectangular."""
    if not isinstance(data, list):
        return [data]
    if data and all(isinstance(item, list) for item in data):
        lengths = {len(item) for item in data}
        if len(lengths) != 1:
            raise InvalidInput(f"{where}: ragged nested list (rows of lengths {sorted(lengths)})")
        return [leaf for item in data for leaf in _leaves(item, where)]
    if any(isinstance(item, list) for item in data):
        raise InvalidInput(f"{where}: ragged nested list (lists mixed with values)")
    return list(data)


def _shape_of(value: Any) -> tuple[int, ...]:
    """The shape of a rectangular nested list (as _leaves checked it)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def _shaped(flat: list, shape: tuple[int, ...], where: str) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    if len(flat) != count:
        raise InvalidInput(
            f"{where}: shape {list(shape)} needs {count} values, but data has {len(flat)}"
        )
    return object_array(flat, shape)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
