"""Shared fixtures: the demo model served in-process by KServe's own app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from predictor import edge
from predictor.model import ModelOptions, TorchModel


@pytest.fixture(scope="session")
def demo_model() -> TorchModel:
    model = TorchModel("model", ModelOptions())
    model.load()
    return model


@pytest.fixture(scope="session")
def client(demo_model: TorchModel) -> TestClient:
    """KServe's FastAPI app with the predictor's routes, as `python -m predictor` builds it.

    The app is KServe's module-level one, so it is wired once per test session.
    """
    from kserve.model_repository import ModelRepository
    from kserve.model_server import app
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    repository = ModelRepository()
    repository.update(demo_model)
    front = edge.install(
        app, {demo_model.name: demo_model}, max_request_bytes=1024 * 1024, latency_logging=False
    )
    RESTServer(
        app, DataPlane(model_registry=repository), ModelRepositoryExtension(repository), 0
    ).create_application()
    with TestClient(front) as test_client:
        yield test_client
