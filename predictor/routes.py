"""HTTP routes the predictor serves itself, ahead of KServe's own.

- V1 `:predict` and V2 `/infer`: the same protocol KServe speaks, decoded straight
  into numpy (codec.py) instead of KServe's element-by-element conversion. They are
  registered on KServe's app before KServe adds its routes, so they take precedence,
  and they raise KServe's errors, so KServe's handlers give the usual status and body.
- `/api/predict`: the API of the service this project grew from, kept byte-for-byte:
  `{"values_list": [...]}` -> `{"error": false, "result": {"tensor_list": [...]}}`,
  errors as `{"error": true, "message": "..."}` (422 for a body that fails validation).
"""

from __future__ import annotations

import functools

from fastapi import FastAPI
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import codec
from .errors import HANDLED_ERRORS, Overloaded, UnsupportedMediaType, message_of, status_of
from .limits import BodyLimitMiddleware
from .logs import RequestLogMiddleware
from .model import TorchModel

JSON_MEDIA_TYPES = {"", "application/json"}
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


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _require_json(request: Request) -> None:
    media = _media_type(request)
    if media not in JSON_MEDIA_TYPES and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type {media!r} is not supported; send application/json"
        )


def _error_response(request: Request, error: Exception, envelope) -> Response:
    """The error as a response; the message also goes into the request's log line."""
    message = message_of(error)
    request.state.error = message
    headers = {"retry-after": str(error.retry_after_s)} if isinstance(error, Overloaded) else None
    return Response(
        codec.dumps(envelope(message)), status_of(error), headers, media_type="application/json"
    )


def kserve_errors(handler):
    """Answer KServe's errors in KServe's format, {"error": "..."}, without a traceback."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except HANDLED_ERRORS as error:
            return _error_response(request, error, lambda message: {"error": message})

    return guarded


class Routes:
    def __init__(self, models: dict[str, TorchModel]) -> None:
        self.models = models

    def model(self, name: str) -> TorchModel:
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(name)
        if not model.ready:
            raise ModelNotReady(name)
        return model

    async def v1_predict(self, request: Request) -> Response:
        model = self.model(request.path_params["model_name"])
        _require_json(request)
        document = codec.parse_json(await request.body())
        inputs = codec.decode_v1(document, model.signature.input_names, model.input_datatypes)
        outputs = await model.infer(inputs)
        return Response(codec.encode_v1(outputs), media_type="application/json")

    async def v2_infer(self, request: Request) -> Response:
        model = self.model(request.path_params["model_name"])
        body = await request.body()
        header_length = request.headers.get(codec.HEADER_LENGTH)
        if header_length is not None:
            infer_request = codec.decode_v2_binary(body, header_length)
        else:
            if _media_type(request) == "application/octet-stream":
                raise InvalidInput(
                    "binary request without the Inference-Header-Content-Length header"
                )
            _require_json(request)
            infer_request = codec.decode_v2_json(codec.parse_json(body))
        outputs = await model.infer(infer_request.inputs)
        content, headers = codec.encode_v2(model.name, infer_request, outputs)
        return Response(content, headers=headers)

    async def legacy_predict(self, request: Request) -> Response:
        """The original service's endpoint, answering in its own envelope."""
        try:
            model = next(iter(self.models.values()))
            if not model.ready:
                raise ModelNotReady(model.name)
            _require_json(request)
            document = codec.parse_json(await request.body())
            if not isinstance(document, dict) or "values_list" not in document:
                raise InvalidInput('body must be a JSON object with a "values_list" field')
            values = document["values_list"]
            if not isinstance(values, list):
                raise InvalidInput('"values_list" must be a list of numbers')
            array = codec.array_from_json(values, None, '"values_list"')
            if array.dtype.kind == "b":
                raise InvalidInput('"values_list" must hold numbers, not booleans')
            outputs = await model.infer({model.signature.input_names[0]: array})
        except InvalidInput as error:
            # The original service answered every invalid body with 422.
            response = _error_response(request, error, _legacy_error)
            response.status_code = 422
            return response
        except HANDLED_ERRORS as error:
            return _error_response(request, error, _legacy_error)
        result = {"error": False, "result": {"tensor_list": next(iter(outputs.values()))}}
        return Response(codec.dumps(result), media_type="application/json")


def _legacy_error(message: str) -> dict:
    return {"error": True, "message": message}


def install(
    app: FastAPI, models: dict[str, TorchModel], max_request_bytes: int, latency_logging: bool
) -> None:
    """Put the predictor's routes, request log and size limit on KServe's app.

    The routes are plain Starlette routes placed ahead of KServe's (so they win), without
    FastAPI's per-request dependency resolution; the OpenAPI document still describes them.
    """
    routes = Routes(models)
    name = next(iter(models))
    handlers = [
        ("/v1/models/{model_name}:predict", kserve_errors(routes.v1_predict)),
        ("/v2/models/{model_name}/infer", kserve_errors(routes.v2_infer)),
        ("/v2/models/{model_name}/versions/{model_version}/infer", kserve_errors(routes.v2_infer)),
        ("/api/predict", routes.legacy_predict),
        ("/api/predict/", routes.legacy_predict),
    ]
    app.router.routes[0:0] = [Route(path, handler, methods=["POST"]) for path, handler in handlers]
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_request_bytes, model_name=name)
    app.add_middleware(RequestLogMiddleware, model_name=name)
    _document(app)
    if not latency_logging:
        app.router.on_startup.append(lambda: _drop_timing_middleware(app))


def _drop_timing_middleware(app: FastAPI) -> None:
    """KServe wraps every request in a middleware whose only output is latency log lines
    (getrusage and two log calls per request); with latency logging off it does nothing
    useful, so it is taken out of the stack before the first request."""
    from timing_asgi import TimingMiddleware

    app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
    app.middleware_stack = None  # rebuilt from user_middleware on the next request


OPENAPI_PATHS = {
    "/v1/models/{model_name}:predict": ("V1", "V1 predict", V1_BODY),
    "/v2/models/{model_name}/infer": (
        "V2",
        "V2 infer (JSON, or the binary tensor extension)",
        V2_BODY,
    ),
    "/api/predict/": ("legacy", "The original service's API", LEGACY_BODY),
}


def _document(app: FastAPI) -> None:
    """Add the predictor's routes to the app's OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for path, (tag, summary, body) in OPENAPI_PATHS.items():
                parameters = (
                    [
                        {
                            "name": "model_name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ]
                    if "{model_name}" in path
                    else []
                )
                schema["paths"][path] = {
                    "post": {
                        "tags": [tag],
                        "summary": summary,
                        "operationId": f"{tag.lower()}_{path.strip('/').split('/')[-1]}",
                        "parameters": parameters,
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": {"schema": body}},
                        },
                        "responses": {
                            "200": {"description": "The model's outputs"},
                            "400": {"description": "Invalid input, with a message"},
                            "404": {"description": "Unknown model"},
                            "413": {"description": "Body or tensor over the limit"},
                            "415": {"description": "Unsupported content type"},
                            "422": {"description": "Invalid body (legacy API)"},
                            "503": {"description": "Model not ready, or overloaded"},
                        },
                    }
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
