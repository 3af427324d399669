"""Which error means which HTTP status, and how errors are worded to callers.

KServe's errors keep their meaning (`InvalidInput` 400, `ModelNotFound` 404,
`ModelNotReady` 503, `InferenceError` 500); the two added here are client errors with a
more exact status (subclasses of InvalidInput, so KServe's own code treats them as bad
input). The REST routes and gRPC ModelInfer (which maps each status to a gRPC code) turn
these into answers themselves: KServe's handlers would log a full traceback for every bad
request, and a request should cost one log line.
"""

from __future__ import annotations

from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady


class UnsupportedMediaType(InvalidInput):
    """The body's content type is not one the endpoint reads."""


class PayloadTooLarge(InvalidInput):
    """The body is larger than --max_request_bytes."""


class RequestTimeout(InvalidInput):
    """The client stopped sending its body for longer than --body_timeout."""


class ClientDisconnected(Exception):
    """The client went away before its request arrived whole (logged as 499)."""


class Overloaded(ModelNotReady):
    """More requests in flight than --max_inflight; the caller should retry later."""

    retry_after_s = 1

    def __init__(self, model_name: str, detail: str) -> None:
        super().__init__(model_name, detail)
        self.error_msg = f"model {model_name} is overloaded: {detail}"


# Most specific first: the first match gives the status.
STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (ModelNotFound, 404),
    (Overloaded, 503),
    (ModelNotReady, 503),
    (PayloadTooLarge, 413),
    (RequestTimeout, 408),
    (UnsupportedMediaType, 415),
    (InvalidInput, 400),
    (InferenceError, 500),
)
HANDLED_ERRORS = tuple(error_type for error_type, _ in STATUS_BY_ERROR)


def status_of(error: Exception) -> int:
    return next(status for error_type, status in STATUS_BY_ERROR if isinstance(error, error_type))


def message_of(error: Exception) -> str:
    return getattr(error, "reason", None) or str(error)


def fault_message(fault: Exception) -> str:
    """What a caller is told of a fault in the model or the server (not its request)."""
    return f"internal error: {type(fault).__name__}: {fault}"


def first_line(error: BaseException) -> str:
    """The first line of an error's message (torch's run to many), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
