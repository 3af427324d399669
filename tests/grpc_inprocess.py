"""gRPC test helpers: ModelInfer requests, and ModelInfer called in-process the way the
gRPC server calls it (serialised request in, serialised response or a status out)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
from kserve.model_repository import ModelRepository
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from predictor.grpc_service import ModelInfer
from predictor.model import TorchModel


class ServicerContext:
    """The part of grpc.aio.ServicerContext that ModelInfer uses: metadata in, status out."""

    def __init__(self, metadata: tuple = ()) -> None:
        self.metadata = metadata
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None

    def invocation_metadata(self) -> tuple:
        return self.metadata

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class GrpcStatus(Exception):
    """ModelInfer ended the call with this status instead of a response."""

    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


def raw_request(model_name: str, array: np.ndarray, datatype: str = "FP32") -> pb.ModelInferRequest:
    """A ModelInferRequest with `array` as input-0, in raw_input_contents."""
    request = pb.ModelInferRequest(model_name=model_name)
    request.inputs.add(name="input-0", datatype=datatype, shape=list(array.shape))
    request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request


def model_infer_handler(model: TorchModel) -> ModelInfer:
    """The predictor's ModelInfer serving `model` alone."""
    registry = ModelRepository()
    registry.update(model)
    return ModelInfer(registry)


def model_infer(model: TorchModel, request: pb.ModelInferRequest | bytes) -> pb.ModelInferResponse:
    """The response to `request` (a message, or raw bytes as sent on the wire); raises
    GrpcStatus when the call ends with an error status."""
    wire = request if isinstance(request, bytes) else request.SerializeToString()
    context = ServicerContext()
    answer = asyncio.run(model_infer_handler(model).handle(wire, context))
    if context.code is not None:
        raise GrpcStatus(context.code, context.details)
    return pb.ModelInferResponse.FromString(answer)
