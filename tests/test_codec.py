"""The V1 fast path (simdjson, flat lists) gives exactly what the general path gives."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest
from kserve.errors import InvalidInput

from predictor import codec

NAMES, TYPES = ["input-0"], ["FP32"]


def general(body: bytes) -> np.ndarray:
    return codec.decode_v1(codec.parse_json(body), NAMES, TYPES)["input-0"]


@pytest.mark.parametrize(
    "document",
    [
        {"instances": [1.5, -2.25, 3e-7, 1e30]},
        {"inputs": [1, 2, 3]},
        {"instances": np.random.default_rng(0).random(10_000).tolist()},
        {"instances": [0.1] * 3},
    ],
)
def test_fast_path_matches_general_path(document):
    body = orjson.dumps(document)
    assert codec._flat_v1_numbers(body) is not None  # the fast path takes it
    fast = codec.decode_v1_body(body, NAMES, TYPES).inputs["input-0"]
    assert fast.dtype == np.float32 and fast.flags.writeable
    np.testing.assert_array_equal(fast, general(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2], [3]]}',
        b'{"instances": [[], [1, 2], 3]}',
        b'{"instances": [1, "2"]}',
        b'{"instances": [1, null]}',
        b'{"instances": [true, 1]}',
        b'{"instances": [1e400]}',
        b'{"instances": [1], "inputs": [2]}',
        b'{"instances": []}',
        b'{"other": [1]}',
        b'{"instances": [1, 2]',
    ],
)
def test_other_bodies_take_the_general_path(body):
    assert codec._flat_v1_numbers(body) is None
    try:
        expected = general(body)
    except InvalidInput as error:
        with pytest.raises(InvalidInput, match="^" + re.escape(str(error)) + "$"):
            codec.decode_v1_body(body, NAMES, TYPES)
    else:
        np.testing.assert_array_equal(
            codec.decode_v1_body(body, NAMES, TYPES).inputs["input-0"], expected
        )


def test_untyped_inputs_keep_integers():
    """Without a declared float datatype (like /api/predict), ints stay ints: no fast path."""
    decoded = codec.decode_v1_body(b'{"instances": [1, 2]}', NAMES, [None]).inputs["input-0"]
    assert decoded.dtype == np.int64 and decoded.tolist() == [1, 2]
