"""ModelInfer messages at the protobuf wire level, so raw tensor bytes are copied once.

Through protobuf, a 400 KB tensor in `raw_input_contents` is copied by the parser, again
when the field is read, and once more to make it writable; an output is copied by
`tobytes()`, by the field append and by serialisation. Here the request's raw contents
are sliced out of the received bytes (memoryviews, no copy) and protobuf parses only the
rest; the response is protobuf's serialisation of everything but the raw contents, with
the raw contents written after it straight from the arrays.

Both are plain protobuf encoding: a parser must accept fields in any order, and the
length-delimited field of a repeated `bytes` may appear anywhere, so clients read the
same message either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

# Field numbers in grpc_predict_v2.proto; both are `repeated bytes` (wire type 2).
REQUEST_RAW_CONTENTS = 7  # ModelInferRequest.raw_input_contents
RESPONSE_RAW_CONTENTS = 6  # ModelInferResponse.raw_output_contents
LENGTH_DELIMITED = 2
RESPONSE_RAW_TAG = bytes([RESPONSE_RAW_CONTENTS << 3 | LENGTH_DELIMITED])

# Bytes taken by the value of each wire type that has a fixed size.
_FIXED_SIZE = {1: 8, 5: 4}


def split_raw_contents(wire: bytes) -> tuple[pb.ModelInferRequest, list[memoryview]]:
    """A serialised ModelInferRequest -> (the message without raw_input_contents, the raw
    contents as views into `wire`). Anything malformed is InvalidInput."""
    view = memoryview(wire)
    rest: list[memoryview] = []
    raw: list[memoryview] = []
    position, end = 0, len(wire)
    while position < end:
        field_start = position
        key, position = _read_varint(wire, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, position = _read_varint(wire, position)
        elif wire_type in _FIXED_SIZE:
            position += _FIXED_SIZE[wire_type]
        elif wire_type == LENGTH_DELIMITED:
            length, position = _read_varint(wire, position)
            if number == REQUEST_RAW_CONTENTS and position + length <= end:
                raw.append(view[position : position + length])
                position += length
                continue
            position += length
        else:
            raise _malformed(f"field {number} has wire type {wire_type}")
        if number == 0 or position > end:
            raise _malformed("truncated or corrupt field")
        rest.append(view[field_start:position])
    try:
        # Without raw contents (typed contents) the bytes are parsed as they are, uncopied.
        message = pb.ModelInferRequest.FromString(b"".join(rest) if raw else wire)
    except DecodeError as error:
        raise _malformed(str(error)) from None
    return message, raw


def with_raw_contents(response: pb.ModelInferResponse, contents: Sequence) -> bytes:
    """`response` serialised, followed by each of `contents` (C-contiguous buffers, e.g.
    numpy arrays) as raw_output_contents, copied once."""
    parts: list = [response.SerializeToString()]
    for buffer in contents:
        parts += (RESPONSE_RAW_TAG, _varint(memoryview(buffer).nbytes), buffer)
    return b"".join(parts)


def _read_varint(wire: bytes, position: int) -> tuple[int, int]:
    value = 0
    for index in range(position, min(position + 10, len(wire))):
        byte = wire[index]
        value |= (byte & 0x7F) << (7 * (index - position))
        if byte < 0x80:
            return value, index + 1
    raise _malformed("truncated or overlong varint")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _malformed(detail: str) -> InvalidInput:
    return InvalidInput(f"malformed ModelInferRequest: {detail}")
