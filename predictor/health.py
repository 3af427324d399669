"""The server's health: one state that every probe reads, so they always agree.

- Ready (`/v2/health/ready`, `/v2/models/{name}/ready`, `/v1/models/{name}`, gRPC
  ServerReady and ModelReady): the model has loaded and warmed up, the server is not
  draining (SIGTERM) and not broken.
- Live (`/v2/health/live`, `/`, gRPC ServerLive): not broken.

Nothing a client sends changes either. A request that fails fails alone, whatever it
was; the server is broken only by a failure that breaks every later request too: a
CUDA error that poisons the context (illegal memory access, device-side assert, ...),
or running out of memory on the model's own warm-up input right after an
out-of-memory error (the device does not recover). Then liveness fails as well, so
Kubernetes restarts the container.
"""

from __future__ import annotations

import logging

import torch

from .metrics import MODEL_HEALTHY

logger = logging.getLogger("predictor")

# CUDA errors after which the context is unusable ("sticky" errors): every later call on
# the device fails, so only a new process recovers.
STICKY_CUDA_ERRORS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "hardware stack error",
    "uncorrectable ECC error",
    "an illegal address",
    "invalid program counter",
    "CUDA-capable device(s) is/are busy or unavailable",
)


def poisons_the_device(error: BaseException) -> bool:
    """Whether an error raised by the model means no later call can succeed."""
    if not isinstance(error, torch.AcceleratorError):
        return False
    text = str(error)
    return any(sticky in text for sticky in STICKY_CUDA_ERRORS)


class Health:
    """A model's health: draining after SIGTERM, broken after a fatal failure."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.draining = False
        self.broken: str | None = None  # why, once broken

    @property
    def live(self) -> bool:
        return self.broken is None

    def serving(self) -> bool:
        """Whether probes should report ready (the model's own state aside)."""
        return self.broken is None and not self.draining

    def start_draining(self) -> None:
        self.draining = True

    def mark_broken(self, reason: str) -> None:
        if self.broken is None:
            logger.error(
                "model %s is broken, liveness and readiness now fail (restart needed): %s",
                self.model_name,
                reason,
            )
            self.broken = reason
            MODEL_HEALTHY.labels(self.model_name).set(0)


def not_serving(models, live_only: bool = False) -> str | None:
    """Why the server (these models) is not ready, or with live_only not live; None when
    it is. Every REST and gRPC server probe answers from this."""
    for model in models:
        if model.health.broken:
            return f"model {model.name!r} is broken: {model.health.broken}"
        if live_only:
            continue
        if model.health.draining:
            return "the server is shutting down (SIGTERM): draining"
        if not model.ready:
            return f"model {model.name!r} is not loaded yet"
    return None
