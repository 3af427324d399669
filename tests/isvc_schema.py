"""A strict JSON Schema of KServe's v1beta1 InferenceService, built from the kserve SDK's models.

The `kserve` package ships OpenAPI-generated classes (`kserve.models.V1beta1InferenceService`
and friends, which refer to `kubernetes.client.models.V1Container` and the other core types).
Each class lists its fields in `openapi_types` (Python name -> type string such as `int`,
`list[V1Container]`, `dict(str, str)`) and their JSON names in `attribute_map`. This module
walks those classes into a JSON Schema in which every object rejects unknown fields, so a typo
such as `contianers` or a string where an integer belongs is an error.

Stable API (the rollout CLI's tests use it too):

    isvc_schema() -> dict                  the JSON Schema (draft 2020-12), built once
    isvc_validator() -> Validator          a jsonschema validator for it, built once
    validate_isvc(obj) -> list[str]        error messages, each with its JSON path; [] if valid
    assert_valid_isvc(obj) -> None         raises AssertionError listing every error

`obj` is a plain dict/list document (e.g. `yaml.safe_load` of a manifest), not an SDK object.
Validating a patch: pass the object that results from applying it, as the API server would.

Where the SDK's types are looser or narrower than the API server, the schema follows the
server: resource quantities (`limits`, `requests`, `overhead`, ...) take an integer or a
string, `IntOrString` fields (typed `object` in the SDK) take an integer or a string.
`status` is not checked (the server owns it).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import kserve.models
import kubernetes.client.models

__all__ = ["assert_valid_isvc", "isvc_schema", "isvc_validator", "validate_isvc"]

ROOT = "V1beta1InferenceService"

_QUANTITY = {"type": ["integer", "number", "string"]}
_INT_OR_STRING = {"type": ["integer", "string"]}
_PRIMITIVES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string"},
    "date": {"type": "string"},
}
# Fields whose SDK type is wrong or too loose for what the API server accepts.
_QUANTITY_MAPS = {"limits", "requests", "overhead", "capacity", "allocatable"}
_INT_OR_STRING_FIELDS = {"port", "maxSurge", "maxUnavailable", "targetPort"}
_K8S_IO_API = re.compile(r"^K8sIoApi[A-Z][a-z]+(?=V\d)")
_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict[(\[]str, (.+)[)\]]$")


def _model_class(name: str) -> type | None:
    # kserve's generator names core types by Go package: K8sIoApiAppsV1DeploymentStrategy is
    # kubernetes.client's V1DeploymentStrategy.
    name = _K8S_IO_API.sub("", name)
    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, name, None)
        if cls is not None and hasattr(cls, "openapi_types"):
            return cls
    return None


def _type_schema(type_name: str, definitions: dict[str, Any]) -> dict[str, Any]:
    if type_name in _PRIMITIVES:
        return dict(_PRIMITIVES[type_name])
    if type_name == "object":
        return {}
    if type_name.endswith("Quantity"):  # ResourceQuantity, V1beta1MetricQuantity (no class)
        return dict(_QUANTITY)
    if match := _LIST.match(type_name):
        return {"type": "array", "items": _type_schema(match.group(1), definitions)}
    if match := _DICT.match(type_name):
        return {"type": "object", "additionalProperties": _type_schema(match.group(1), definitions)}
    cls = _model_class(type_name)
    if cls is None:
        raise KeyError(f"no kserve or kubernetes model named {type_name!r}")
    if type_name not in definitions:
        definitions[type_name] = {}  # placeholder: recursive types refer back to it
        definitions[type_name] = _class_schema(cls, definitions)
    return {"$ref": f"#/$defs/{type_name}"}


def _class_schema(cls: type, definitions: dict[str, Any], skip: tuple = ()) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for attr, type_name in cls.openapi_types.items():
        json_name = cls.attribute_map[attr]
        if json_name in skip:
            properties[json_name] = {"type": "object"}
        elif json_name in _QUANTITY_MAPS and _DICT.match(type_name):
            properties[json_name] = {"type": "object", "additionalProperties": _QUANTITY}
        elif json_name in _INT_OR_STRING_FIELDS and type_name == "object":
            properties[json_name] = dict(_INT_OR_STRING)
        else:
            properties[json_name] = _type_schema(type_name, definitions)
    return {"type": "object", "properties": properties, "additionalProperties": False}


@functools.cache
def isvc_schema() -> dict[str, Any]:
    """The strict JSON Schema of a v1beta1 InferenceService document."""
    definitions: dict[str, Any] = {}
    root = _class_schema(_model_class(ROOT), definitions, skip=("status",))
    root["properties"]["apiVersion"] = {"const": "serving.kserve.io/v1beta1"}
    root["properties"]["kind"] = {"const": "InferenceService"}
    root["required"] = ["apiVersion", "kind", "metadata", "spec"]
    # The API server requires a predictor; the SDK marks it required in its constructor only.
    definitions["V1beta1InferenceServiceSpec"]["required"] = ["predictor"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": definitions}


@functools.cache
def isvc_validator() -> jsonschema.protocols.Validator:
    """A reusable validator for isvc_schema()."""
    schema = isvc_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_isvc(obj: Any) -> list[str]:
    """Every schema error of `obj` as '<json path>: <message>'; an empty list when valid."""
    errors = sorted(isvc_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]


def assert_valid_isvc(obj: Any) -> None:
    """Raise AssertionError listing every schema error of `obj`."""
    errors = validate_isvc(obj)
    assert not errors, "invalid InferenceService:\n  " + "\n  ".join(errors)
