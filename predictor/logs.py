"""The request log: one JSON line per request on stdout, with the request id.

Written directly rather than through `logging`, whose record and formatter machinery
costs more than the whole of a small inference. Health probes and /metrics are logged
only at DEBUG, so a pod's log is not a list of kubelet probes.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time

import orjson
from kserve.logging import KSERVE_LOG_CONFIG

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}

_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process and cheap: a random prefix and a counter."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


class AccessLog:
    def __init__(self, stream=None, level: str = "INFO") -> None:
        self.stream = stream
        self.level = LEVELS[level]
        self._second = -1
        self._stamp = ""

    def configure(self, level: str, stream=None) -> None:
        self.level = LEVELS[level]
        self.stream = stream

    def _time(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(
        self,
        request_id: str,
        method: str,
        path: str,
        status: int,
        seconds: float,
        error: str | None = None,
        quiet: bool = False,
    ) -> None:
        level = LEVELS["DEBUG"] if quiet else LEVELS["INFO"]
        if level < self.level:
            return
        entry = {
            "time": self._time(),
            "level": "DEBUG" if quiet else "INFO",
            "logger": "predictor.access",
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
        }
        if error:
            entry["error"] = error
        stream = self.stream or sys.stdout.buffer
        stream.write(orjson.dumps(entry) + b"\n")
        stream.flush()


access_log = AccessLog()


def setup_predictor_logger(level: str) -> None:
    """The predictor's own lines (the model loaded and where, faults with their traceback)
    on stderr in KServe's format. Call first: the model loads before KServe sets up its
    logging, which leaves this logger alone."""
    formatter = KSERVE_LOG_CONFIG["formatters"]["kserve"]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(formatter["fmt"], formatter["datefmt"]))
    logger = logging.getLogger("predictor")
    logger.handlers = [handler]
    logger.setLevel(level)
    logger.propagate = False


def configure(level: str, access_log_enabled: bool, latency_logging: bool) -> None:
    """Call after ModelServer() has configured KServe's logging."""
    access_log.configure(level)
    if not access_log_enabled:
        # uvicorn formats an access line whenever this logger has handlers, whatever its
        # level; without handlers it skips the work.
        uvicorn_access = logging.getLogger("uvicorn.access")
        uvicorn_access.handlers = []
        uvicorn_access.propagate = False
    if not latency_logging:
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
