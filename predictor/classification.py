"""Classification results: an output's top-k classes instead of its raw values.

Applied to the model's outputs after `model.run`, so the model, its handler and the codecs
stay unaware of it; the codecs only carry the count each request asks for.

- V2 (REST JSON, REST binary, gRPC): Triton's classification extension. An output asked
  for with `"parameters": {"classification": k}` (gRPC: `int64_param`) comes back as BYTES,
  one `"<value>:<index>[:<label>]"` string per class, highest value first, in the output's
  shape with its last (class) dimension replaced by min(k, classes). The value is written
  as Triton writes it (C++ `std::to_string`: `%f` for floats, plain integers otherwise).
- V1: `{"instances": [...], "parameters": {"classification": true}}` gives each instance
  `{"label", "index", "score"}` of its top class; `"classification": k` a list of its top k.

Labels come from `labels.txt` beside the model file, line i naming class i; as in Triton,
an index past the last line, or an empty line, has no label.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from kserve.errors import InvalidInput

from .bytes_tensors import object_array
from .datatypes import v2_datatype
from .loader import ModelLoadError

logger = logging.getLogger("predictor")

LABELS_FILE = "labels.txt"
# Triton's bound on the classes of one instance, against unbounded CPU and memory use.
MAX_CLASSES = 1_000_000
PARAMETER = "classification"


def read_labels(model_dir: Path) -> list[str] | None:
    """The class labels in `labels.txt` beside the model (None without one).

    Lines split on "\\n" only (as Triton's getline), so a label may hold any other
    character; a trailing "\\r" (a file written on Windows) is not part of the label."""
    path = model_dir / LABELS_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ModelLoadError(f"{path} is not UTF-8 text ({error})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no label
    labels = [line.removesuffix("\r") for line in lines]
    logger.info("read %d class labels from %s", len(labels), path)
    return labels


def class_count(value: Any, where: str) -> int:
    """The `classification` parameter of a request: a positive integer, or a 400."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(
            f"{where}: parameter 'classification' must be a positive integer (how many of "
            f"the highest classes to return), got {value!r}"
        )
    return value


# ---------------------------------------------------------------- top-k


def top_classes(
    outputs: dict[str, np.ndarray], name: str, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The values and indices of the `count` highest classes (the last dimension) of an
    output, each of shape [..., min(count, classes)], highest first; equal values keep
    their index order (Triton leaves it unspecified), NaN ranks above every number."""
    if name not in outputs:
        raise InvalidInput(f"unknown output {name!r}; the model gives {list(outputs)}")
    array = np.asarray(outputs[name])
    where = f"output {name!r}"
    datatype = v2_datatype(array)
    if array.dtype.kind not in "iuf":
        raise InvalidInput(
            f"{where} is {datatype}; classification takes a numeric output "
            "(INT8-64, UINT8-64, FP16, FP32, FP64)"
        )
    if array.ndim == 0:
        raise InvalidInput(
            f"{where} is a scalar; classification takes an output whose last dimension "
            "holds the classes"
        )
    classes = array.shape[-1]
    if classes > MAX_CLASSES:
        raise InvalidInput(
            f"{where}: classification output tensor too large ({classes} classes; at most "
            f"{MAX_CLASSES})"
        )
    kept = min(count, classes)
    rows = array.reshape(math.prod(array.shape[:-1]), classes)
    # A stable ascending sort of each row reversed, read backwards: highest value first,
    # and equal values in ascending index order, for signed, unsigned and float alike.
    ascending = np.argsort(rows[:, ::-1], axis=1, kind="stable")
    indices = classes - 1 - ascending[:, ::-1][:, :kept]
    values = np.take_along_axis(rows, indices, axis=1)
    shape = (*array.shape[:-1], kept)
    return values.reshape(shape), indices.reshape(shape)


def _label(labels: list[str] | None, index: int) -> str | None:
    if labels is None or index >= len(labels):
        return None
    return labels[index] or None


# ---------------------------------------------------------------- V2 (Triton's extension)


def apply(
    outputs: dict[str, np.ndarray], requested: dict[str, int], labels: list[str] | None
) -> dict[str, np.ndarray]:
    """The outputs, each one the request asked classification of (name -> k) replaced by
    its BYTES "<value>:<index>[:<label>]" strings."""
    if not requested:
        return outputs
    result = dict(outputs)
    for name, count in requested.items():
        values, indices = top_classes(outputs, name, count)
        number = "%f" if values.dtype.kind == "f" else "%d"
        strings = []
        flat = zip(values.reshape(-1).tolist(), indices.reshape(-1).tolist(), strict=True)
        for value, index in flat:
            text = f"{number % value}:{index}"
            label = _label(labels, index)
            strings.append((text if label is None else f"{text}:{label}").encode())
        result[name] = object_array(strings, values.shape)
    return result


# ---------------------------------------------------------------- V1


def v1_parameter(parameters: dict) -> bool | int | None:
    """What a V1 request's `"parameters": {"classification": ...}` asks: True (each
    instance's top class), k (its top k), or None (raw outputs, as without the parameter)."""
    value = parameters.get(PARAMETER)
    if value is None or value is False:
        return None
    if value is True:
        return True
    try:
        return class_count(value, "request")
    except InvalidInput:
        raise InvalidInput(
            "request: parameter 'classification' must be true (each instance's top class) or a "
            f"positive integer (its k highest classes), got {value!r}"
        ) from None


def v1_predictions(
    outputs: dict[str, np.ndarray], asked: bool | int, labels: list[str] | None
) -> Any:
    """V1 `predictions` with every output classified: per instance (the output's leading
    dimensions) `{"label", "index", "score"}` of its top class (asked True), or a list of
    those of its top k; `label` only where labels.txt names the class."""
    predictions = {}
    for name in outputs:
        values, indices = top_classes(outputs, name, 1 if asked is True else int(asked))
        rows = math.prod(values.shape[:-1])
        flat_values = values.reshape(rows, values.shape[-1])
        flat_indices = indices.reshape(rows, values.shape[-1]).tolist()
        instances: list[Any] = []
        for row_values, row_indices in zip(flat_values, flat_indices, strict=True):
            classes = [
                _v1_class(score, index, labels)
                for score, index in zip(row_values, row_indices, strict=True)
            ]
            instances.append(classes if asked is not True else (classes[0] if classes else None))
        predictions[name] = _nested(instances, values.shape[:-1])
    if len(predictions) == 1:
        return next(iter(predictions.values()))
    return predictions


def _v1_class(score: np.generic, index: int, labels: list[str] | None) -> dict[str, Any]:
    """One class; the score stays a numpy scalar, so it is written as the V1 outputs are
    (float32 as float32: 0.91, not 0.9100000262260437)."""
    label = _label(labels, index)
    entry: dict[str, Any] = {} if label is None else {"label": label}
    entry["index"] = index
    entry["score"] = score
    return entry


def _nested(flat: list, shape: tuple[int, ...]) -> Any:
    """A flat list as nested lists of `shape` (its one element when the shape is [])."""
    if not shape:
        return flat[0]
    size = math.prod(shape[1:])
    return [_nested(flat[i * size : (i + 1) * size], shape[1:]) for i in range(shape[0])]
