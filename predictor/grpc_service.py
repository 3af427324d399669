"""The gRPC server: KServe's, with ModelInfer answered by the predictor.

KServe's servicer turns every ModelInfer into its `InferRequest` objects and back, with
protobuf copying the raw tensor bytes several times on the way. Here ModelInfer takes the
request's bytes and answers bytes (grpc_wire.py: raw contents copied once each way), and
runs through the same preprocess -> predict -> postprocess path as REST, with the same
metrics and one JSON log line per request. Every other RPC is KServe's servicer, behind
KServe's error-mapping interceptor, except where it would disagree with REST: server
live/ready read the model's health (health.py), server metadata lists the extensions
implemented here, and repository load/unload are refused (metadata.py).

KServe's per-call "grpc method: ..." logging interceptor is left out: the access line
written here says more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent import futures

import grpc
from google.protobuf import message_factory
from grpc import aio
from grpc_interceptor.exceptions import PermissionDenied
from kserve import model_server as kserve_model_server
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from . import classification, codec, tracing
from .errors import HANDLED_ERRORS, fault_message, message_of, status_of
from .grpc_wire import split_raw_contents
from .health import not_serving
from .logs import access_log, new_request_id
from .metadata import MODEL_CONTROL_DISABLED, server_metadata
from .metrics import observe_request, observe_stage
from .model import TorchModel, ready_model

logger = logging.getLogger("predictor")

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
MODEL_INFER = f"/{SERVICE.full_name}/ModelInfer"

# The gRPC status for each HTTP status the predictor's errors carry (errors.py).
GRPC_CODES = {
    200: grpc.StatusCode.OK,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}


class ModelInfer:
    """The ModelInfer RPC, serialised request in, serialised response out."""

    def __init__(self, registry) -> None:
        self.registry = registry

    async def handle(self, wire: bytes, context: aio.ServicerContext) -> bytes:
        start = time.perf_counter()
        headers = dict(context.invocation_metadata() or ())
        span = tracing.start_request(MODEL_INFER[1:], headers, "grpc")
        model_name, status, error = "", 200, None
        try:
            message, raw = split_raw_contents(wire)
            model_name = message.model_name
            model = ready_model(self.registry.get_model(model_name), model_name)
            request = codec.decode_grpc(message, raw)
            decoded = time.perf_counter()
            observe_stage("decode", model.name, "grpc", decoded - start)
            tracing.child("decode", start, decoded)
            outputs = await model.run(request.inputs, headers)
            encoding = time.perf_counter()
            outputs = classification.apply(outputs, request.classification, model.labels)
            answer = codec.encode_grpc(model.name, request, outputs)
            encoded = time.perf_counter()
            observe_stage("encode", model.name, "grpc", encoded - encoding)
            tracing.child("encode", encoding, encoded)
            return answer
        except HANDLED_ERRORS as failure:
            status, error = status_of(failure), message_of(failure)
        except asyncio.CancelledError:
            # The client went away or its deadline passed: nobody reads an answer.
            status, error = 499, "the call was cancelled (client gone or deadline exceeded)"
            raise
        except Exception as failure:
            logger.exception("ModelInfer on model %r failed", model_name)
            status, error = 500, fault_message(failure)
        finally:
            elapsed = time.perf_counter() - start
            observe_request(model_name, "grpc", status, elapsed)
            request_id = headers.get("x-request-id") or new_request_id()
            code = GRPC_CODES.get(status, grpc.StatusCode.UNKNOWN).value[0]
            tracing.finish_request(span, model_name, status, request_id, error, grpc_code=code)
            path = f"ModelInfer/{model_name}"
            access_log.write(request_id, "grpc", path, status, elapsed, error)
        # A status, not an exception: the call ends with it and no response message.
        context.set_code(GRPC_CODES[status])
        context.set_details(error)
        return b""


class PredictorServicer(InferenceServicer):
    """KServe's servicer, with the RPCs whose answers must match the REST endpoints'."""

    def _models(self) -> list[TorchModel]:
        models = self._data_plane.model_registry.get_models().values()
        return [m for m in models if isinstance(m, TorchModel)]

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=not_serving(self._models(), live_only=True) is None)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        models = self._models()
        return pb.ServerReadyResponse(ready=bool(models) and not_serving(models) is None)

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**server_metadata())

    async def RepositoryModelLoad(self, request, context):
        raise PermissionDenied(MODEL_CONTROL_DISABLED.format(name=request.model_name))

    async def RepositoryModelUnload(self, request, context):
        raise PermissionDenied(MODEL_CONTROL_DISABLED.format(name=request.model_name))


def method_handlers(servicer: InferenceServicer, model_infer: ModelInfer) -> dict:
    """A handler for every RPC of the service: KServe's servicer with protobuf messages,
    except ModelInfer, which takes and gives bytes (no (de)serialiser)."""
    handlers = {}
    for method in SERVICE.methods:
        if method.name == "ModelInfer":
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(model_infer.handle)
            continue
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
            response_serializer=message_factory.GetMessageClass(
                method.output_type
            ).SerializeToString,
        )
    return handlers


class KServeErrorStatus(ExceptionToStatusInterceptor):
    """KServe's mapping of its errors to gRPC status, for KServe's RPCs. ModelInfer sets
    its own status, so it skips the wrapper this would build around it on every call."""

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method == MODEL_INFER:
            return await continuation(handler_call_details)
        return await super().intercept_service(continuation, handler_call_details)

    async def handle_exception(self, ex, request_or_iterator, context, method_name):
        """A client's error (an unknown model, say) ends the call with its status, without
        the traceback KServe logs for it; anything else is KServe's to handle and log."""
        if isinstance(ex, HANDLED_ERRORS) and status_of(ex) != 500:
            await context.abort(GRPC_CODES[status_of(ex)], message_of(ex))
        await super().handle_exception(ex, request_or_iterator, context, method_name)


class PredictorGRPCServer(GRPCServer):
    async def start(self, max_workers: int) -> None:
        """KServe's GRPCServer.start, with ModelInfer registered to the predictor and no
        per-call logging interceptor."""
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(KServeErrorStatus(),),
            options=[
                ("grpc.max_send_message_length", self._kwargs["grpc_max_send_message_length"]),
                (
                    "grpc.max_receive_message_length",
                    self._kwargs["grpc_max_receive_message_length"],
                ),
            ],
        )
        servicer = PredictorServicer(self._data_plane, self._model_repository_extension)
        model_infer = ModelInfer(self._data_plane.model_registry)
        self._server.add_registered_method_handlers(
            SERVICE.full_name, method_handlers(servicer, model_infer)
        )
        self._server.add_insecure_port(f"[::]:{self._port}")
        await self._server.start()
        logger.info("gRPC server listening on [::]:%d", self._port)
        await self._server.wait_for_termination()


def install() -> None:
    """Have ModelServer build the predictor's gRPC server: ModelServer.start looks the
    class up in its own module, so that name is pointed here (before it starts)."""
    kserve_model_server.GRPCServer = PredictorGRPCServer  # type: ignore[misc]
