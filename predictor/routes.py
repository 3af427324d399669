"""The inference endpoints the predictor serves itself, ahead of KServe's own.

- V1 `:predict` and V2 `/infer`: the protocol KServe speaks, decoded straight into numpy
  (codec.py) instead of KServe's element-by-element conversion, answering errors in
  KServe's format `{"error": "..."}` with KServe's status codes (errors.py).
- `/api/predict`: the API of the service this project grew from, kept byte-for-byte:
  `{"values_list": [...]}` -> `{"error": false, "result": {"tensor_list": [...]}}`,
  errors as `{"error": true, "message": "..."}` (422 for a body that fails validation).
- Statistics (`/v2/models[/{name}]/stats`): Triton's statistics extension (statistics.py).
- Health and metadata (`/v2/health/*`, `/`, `/v2/models/{name}[/ready]`, `/v1/models/{name}`,
  `/v2`): answered from the model's one health state (health.py), so they always agree,
  and in the Open Inference Protocol's schemas (metadata.py). Model load/unload through
  the repository extension is refused (403): no client may unload a replica's model.

Handlers take an `HttpRequest` and return an `HttpResponse`; edge.py carries them over
ASGI. Everything else (metrics, docs, the repository index) stays KServe's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from fastapi import FastAPI
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

from . import classification, codec, statistics, tracing
from .errors import (
    HANDLED_ERRORS,
    Overloaded,
    RequestTimeout,
    UnsupportedMediaType,
    message_of,
    status_of,
)
from .health import not_serving
from .metadata import MODEL_CONTROL_DISABLED, model_metadata, server_metadata
from .metrics import observe_stage
from .model import TorchModel, ready_model

JSON = "application/json"


@dataclass
class HttpRequest:
    path_params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": JSON})
    error: str | None = None  # for the request's log line


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def _media_type(request: HttpRequest) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


# curl -d sends this unless told otherwise; its users mean JSON, and the body says so.
CURL_DEFAULT = "application/x-www-form-urlencoded"


def _require_json(request: HttpRequest) -> None:
    """JSON bodies may come without a content type (tritonclient sends none) or with
    curl's default form type (read as JSON: a form body fails as malformed JSON), not
    with another one."""
    media = _media_type(request)
    if media not in ("", JSON, CURL_DEFAULT) and not media.endswith("+json"):
        raise UnsupportedMediaType(f"content type {media!r} is not supported; send {JSON}")


def _stage_done(stage: str, model: str, protocol: str, start: float) -> None:
    """A decode or encode that began at `start` is done: its histogram, and its span when
    the request is traced."""
    end = time.perf_counter()
    observe_stage(stage, model, protocol, end - start)
    tracing.child(stage, start, end)


def _json(document: dict) -> HttpResponse:
    return HttpResponse(200, codec.dumps(document))


def _unavailable(message: str) -> HttpResponse:
    return HttpResponse(503, codec.dumps({"error": message}), error=message)


def error_response(
    error: Exception, legacy: bool = False, status: int | None = None
) -> HttpResponse:
    message = message_of(error)
    body = {"error": True, "message": message} if legacy else {"error": message}
    headers = {"content-type": JSON}
    if isinstance(error, Overloaded):
        headers["retry-after"] = str(error.retry_after_s)
    elif isinstance(error, RequestTimeout):
        headers["connection"] = "close"  # the rest of the body may still come
    return HttpResponse(status or status_of(error), codec.dumps(body), headers, message)


class Routes:
    def __init__(self, models: dict[str, TorchModel]) -> None:
        self.models = models

    def model(self, name: str) -> TorchModel:
        return ready_model(self.models.get(name), name)

    def draining(self) -> bool:
        return any(model.health.draining for model in self.models.values())

    # ---- health and metadata ---------------------------------------------------------------

    async def server_live(self, request: HttpRequest) -> HttpResponse:
        problem = not_serving(self.models.values(), live_only=True)
        if problem:
            return _unavailable(f"not live: {problem}")
        return _json({"status": "alive"} if request.path_params.get("v1") else {"live": True})

    async def server_ready(self, request: HttpRequest) -> HttpResponse:
        problem = not_serving(self.models.values())
        return _unavailable(f"not ready: {problem}") if problem else _json({"ready": True})

    async def model_ready(self, request: HttpRequest) -> HttpResponse:
        name = request.path_params["model_name"]
        model = self.models.get(name)
        if model is None:
            return error_response(ModelNotFound(name))
        if not await model.healthy():
            return error_response(ModelNotReady(name, not_serving(self.models.values()) or ""))
        return _json({"name": name, "ready": True})

    async def model_metadata(self, request: HttpRequest) -> HttpResponse:
        name = request.path_params["model_name"]
        model = self.models.get(name)
        if model is None or not model.ready:
            return error_response(ModelNotFound(name) if model is None else ModelNotReady(name))
        return _json(model_metadata(model))

    async def server_metadata(self, request: HttpRequest) -> HttpResponse:
        return _json(server_metadata())

    async def model_statistics(self, request: HttpRequest) -> HttpResponse:
        """Triton's statistics extension, for one model or (no name) every model."""
        name = request.path_params.get("model_name")
        if name is not None and name not in self.models:
            return error_response(ModelNotFound(name))
        if name is not None and name not in statistics.MODELS:  # still loading
            return error_response(ModelNotReady(name))
        names = [name] if name is not None else list(self.models)
        stats = [statistics.MODELS[n].as_json() for n in names if n in statistics.MODELS]
        return _json({"model_stats": stats})

    async def model_control(self, request: HttpRequest) -> HttpResponse:
        name = request.path_params["model_name"]
        if name not in self.models:
            return error_response(ModelNotFound(name))
        message = MODEL_CONTROL_DISABLED.format(name=name)
        return HttpResponse(403, codec.dumps({"error": message}), error=message)

    async def v1_predict(self, request: HttpRequest) -> HttpResponse:
        try:
            model = self.model(request.path_params["model_name"])
            _require_json(request)
            start = time.perf_counter()
            v1 = codec.decode_v1_body(request.body, model.input_names, model.input_datatypes)
            classes = classification.v1_parameter(v1.parameters)
            _stage_done("decode", model.name, "v1", start)
            outputs = await model.run(v1.inputs, request.headers)
            start = time.perf_counter()
            if classes is not None:
                predictions = classification.v1_predictions(outputs, classes, model.labels)
                body = codec.dumps({"predictions": predictions})
            else:
                body = codec.encode_v1(outputs)
            _stage_done("encode", model.name, "v1", start)
            return HttpResponse(200, body)
        except HANDLED_ERRORS as error:
            return error_response(error)

    async def v2_infer(self, request: HttpRequest) -> HttpResponse:
        try:
            model = self.model(request.path_params["model_name"])
            start = time.perf_counter()
            header_length = request.headers.get(codec.HEADER_LENGTH)
            if header_length is not None:
                infer_request = codec.decode_v2_binary(request.body, header_length)
            else:
                if _media_type(request) == "application/octet-stream":
                    raise InvalidInput(
                        "binary request without the Inference-Header-Content-Length header"
                    )
                _require_json(request)
                infer_request = codec.decode_v2_json(codec.parse_json(request.body))
            _stage_done("decode", model.name, "v2", start)
            outputs = await model.run(infer_request.inputs, request.headers)
            start = time.perf_counter()
            outputs = classification.apply(outputs, infer_request.classification, model.labels)
            content, headers = codec.encode_v2(model.name, infer_request, outputs)
            _stage_done("encode", model.name, "v2", start)
            return HttpResponse(200, content, headers)
        except HANDLED_ERRORS as error:
            return error_response(error)

    async def legacy_predict(self, request: HttpRequest) -> HttpResponse:
        """The original service's endpoint, answering in its own envelope."""
        try:
            served = next(iter(self.models.values()))
            model = ready_model(served, served.name)
            _require_json(request)
            start = time.perf_counter()
            document = codec.parse_json(request.body)
            if not isinstance(document, dict) or "values_list" not in document:
                raise InvalidInput('body must be a JSON object with a "values_list" field')
            values = document["values_list"]
            if not isinstance(values, list):
                raise InvalidInput('"values_list" must be a list of numbers')
            array = codec.array_from_json(values, None, '"values_list"', booleans=False)
            _stage_done("decode", model.name, "legacy", start)
            outputs = await model.run({model.signature.input_names[0]: array}, request.headers)
        except (UnsupportedMediaType, InvalidInput) as error:
            # The original service answered every invalid body with 422.
            too_large = status_of(error) == 413
            return error_response(error, legacy=True, status=None if too_large else 422)
        except HANDLED_ERRORS as error:
            return error_response(error, legacy=True)
        start = time.perf_counter()
        tensor = codec.json_value(next(iter(outputs.values())))
        body = codec.dumps({"error": False, "result": {"tensor_list": tensor}})
        _stage_done("encode", model.name, "legacy", start)
        return HttpResponse(200, body)

    async def no_versions(self, request: HttpRequest) -> HttpResponse:
        """Model versions: KServe answers 501 for any of them; a client asking for a version
        this server does not have gets a 404, like an unknown model."""
        name = request.path_params["model_name"]
        if name not in self.models:
            return error_response(ModelNotFound(name))
        version = request.path_params["model_version"]
        message = f"model {name!r} has no version {version!r}: it is served unversioned"
        return HttpResponse(404, codec.dumps({"error": message}), error=message)

    def match(
        self, method: str, path: str, query: bytes = b""
    ) -> tuple[Handler, dict[str, str]] | None:
        """The handler for a request, with its path parameters; None for KServe's routes."""
        if path.startswith("/v2/models/"):
            parts = path[len("/v2/models/") :].split("/")
            version = None
            if len(parts) >= 3 and parts[1] == "versions":
                version = parts[2]
            elif b"model_version=" in query:
                version = parse_qs(query.decode("latin-1")).get("model_version", [""])[0]
            if version and parts[0]:
                return self.no_versions, {"model_name": parts[0], "model_version": version}
        if method == "GET":
            return self._match_get(path)
        if method != "POST":
            return None
        if path.startswith("/v2/repository/models/") and path.endswith(("/load", "/unload")):
            name = path[len("/v2/repository/models/") :].rsplit("/", 1)[0]
            if name and "/" not in name:
                return self.model_control, {"model_name": name}
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            name = path[len("/v1/models/") : -len(":predict")]
            if name and "/" not in name:
                return self.v1_predict, {"model_name": name}
        elif path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path[len("/v2/models/") : -len("/infer")].split("/")
            if len(parts) == 1 and parts[0]:
                return self.v2_infer, {"model_name": parts[0]}
        elif path in ("/api/predict", "/api/predict/"):
            return self.legacy_predict, {}
        return None

    def _match_get(self, path: str) -> tuple[Handler, dict[str, str]] | None:
        if path == "/v2/health/live":
            return self.server_live, {}
        if path == "/":
            return self.server_live, {"v1": "1"}
        if path == "/v2/health/ready":
            return self.server_ready, {}
        if path in ("/v2", "/v2/"):
            return self.server_metadata, {}
        if path.startswith("/v2/models/") and path.endswith("/stats"):
            rest = path[len("/v2/models/") : -len("/stats")]
            if not rest and "stats" not in self.models:  # a model named stats: its metadata
                return self.model_statistics, {}
            if rest and "/" not in rest:
                return self.model_statistics, {"model_name": rest}
        if path.startswith("/v2/models/"):
            rest = path[len("/v2/models/") :]
            name = rest.removesuffix("/ready")
            if name and "/" not in name:
                handler = self.model_ready if rest.endswith("/ready") else self.model_metadata
                return handler, {"model_name": name}
        elif path.startswith("/v1/models/"):
            name = path[len("/v1/models/") :]
            if name and "/" not in name and ":" not in name:
                return self.model_ready, {"model_name": name}
        return None


V1_BODY = {"type": "object", "properties": {"instances": {}, "inputs": {}}}
V2_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "data": {},
                    "parameters": {"type": "object"},
                },
            },
        },
        "outputs": {"type": "array", "items": {"type": "object"}},
        "parameters": {"type": "object"},
    },
}
LEGACY_BODY = {
    "type": "object",
    "required": ["values_list"],
    "properties": {"values_list": {"type": "array", "items": {"type": "number"}}},
}
OPENAPI_PATHS = {
    "/v1/models/{model_name}:predict": ("V1", "V1 predict", V1_BODY),
    "/v2/models/{model_name}/infer": ("V2", "V2 infer (JSON or binary extension)", V2_BODY),
    "/api/predict/": ("legacy", "The original service's API", LEGACY_BODY),
}
RESPONSES = {
    "200": {"description": "The model's outputs"},
    "400": {"description": "Invalid input, with a message"},
    "404": {"description": "Unknown model"},
    "413": {"description": "Body or tensor over the limit"},
    "415": {"description": "Unsupported content type"},
    "422": {"description": "Invalid body (legacy API)"},
    "503": {"description": "Model not ready, or overloaded"},
}


def document(app: FastAPI) -> None:
    """Describe the predictor's endpoints in the app's OpenAPI document (/openapi.json)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for path, (tag, summary, body) in OPENAPI_PATHS.items():
                name = {"name": "model_name", "in": "path", "required": True}
                schema["paths"][path] = {
                    "post": {
                        "tags": [tag],
                        "summary": summary,
                        "operationId": f"{tag.lower()}_infer",
                        "parameters": (
                            [{**name, "schema": {"type": "string"}}] if "{" in path else []
                        ),
                        "requestBody": {
                            "required": True,
                            "content": {JSON: {"schema": body}},
                        },
                        "responses": RESPONSES,
                    }
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
