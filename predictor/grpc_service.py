"""gRPC ModelInfer answered by the predictor itself.

KServe's servicer turns every request into its `InferRequest` objects, runs them through
its dataplane and the model's KServe `__call__`, and builds the response back from
`InferResponse` objects. This subclass keeps every other RPC of KServe's servicer
(health, metadata, repository) and answers ModelInfer straight from the protobuf message
to numpy and back (codec.py), through the same preprocess -> predict -> postprocess path
as REST, with the same metrics and one JSON log line per request.
"""

from __future__ import annotations

import time

from kserve.errors import ModelNotFound, ModelNotReady
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import server as kserve_grpc_server
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.utils.utils import to_headers

from . import codec
from .errors import HANDLED_ERRORS, status_of
from .logs import access_log, new_request_id
from .metrics import observe_request
from .model import TorchModel


class PredictorServicer(InferenceServicer):
    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        start = time.perf_counter()
        headers = to_headers(context)
        status, error = 200, None
        try:
            model = self._data_plane.model_registry.get_model(request.model_name)
            if model is None:
                raise ModelNotFound(request.model_name)
            if not isinstance(model, TorchModel):
                return await super().ModelInfer(request, context)
            if not model.ready:
                raise ModelNotReady(model.name)
            decoded = codec.decode_grpc(request)
            outputs = await model.run(decoded.inputs, headers)
            return codec.encode_grpc(model.name, decoded, outputs)
        except Exception as failure:
            # The interceptor KServe installs turns the error into the gRPC status.
            status = status_of(failure) if isinstance(failure, HANDLED_ERRORS) else 500
            error = str(failure)
            raise
        finally:
            elapsed = time.perf_counter() - start
            observe_request(request.model_name, "grpc", status, elapsed)
            request_id = headers.get("x-request-id") or new_request_id()
            path = f"ModelInfer/{request.model_name}"
            access_log.write(request_id, "grpc", path, status, elapsed, error)


def install() -> None:
    """Have KServe's gRPC server build this servicer: GRPCServer.start looks the class up
    in its own module, so that name is pointed here (before ModelServer.start)."""
    kserve_grpc_server.InferenceServicer = PredictorServicer  # type: ignore[misc]
