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

from fastapi import FastAPI, Request, Response
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

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


def _openapi(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


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
    async def guarded(request: Request, **path):
        try:
            return await handler(request, **path)
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

    async def v1_predict(self, request: Request, model_name: str) -> Response:
        model = self.model(model_name)
        _require_json(request)
        document = codec.parse_json(await request.body())
        inputs = codec.decode_v1(document, model.signature.input_names, model.input_datatypes)
        outputs = await model.infer(inputs)
        return Response(codec.encode_v1(outputs), media_type="application/json")

    async def v2_infer(self, request: Request, model_name: str, model_version: str | None = None):
        model = self.model(model_name)
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


def install(app: FastAPI, models: dict[str, TorchModel], max_request_bytes: int) -> None:
    """Add the predictor's routes, request log and size limit to KServe's app, before KServe
    adds its own routes (ModelServer.start), so these take precedence."""
    routes = Routes(models)
    name = next(iter(models))
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_request_bytes, model_name=name)
    app.add_middleware(RequestLogMiddleware, model_name=name)
    app.add_api_route(
        "/v1/models/{model_name}:predict",
        kserve_errors(routes.v1_predict),
        methods=["POST"],
        tags=["V1"],
        openapi_extra=_openapi(V1_BODY),
    )
    for path in (
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    ):
        app.add_api_route(
            path,
            kserve_errors(routes.v2_infer),
            methods=["POST"],
            tags=["V2"],
            openapi_extra=_openapi(V2_BODY),
            include_in_schema="versions" not in path,
        )
    for path in ("/api/predict", "/api/predict/"):
        app.add_api_route(
            path,
            routes.legacy_predict,
            methods=["POST"],
            tags=["legacy"],
            openapi_extra=_openapi(LEGACY_BODY),
            include_in_schema=path.endswith("/"),
        )
