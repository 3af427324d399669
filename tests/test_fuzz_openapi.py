"""Schemathesis against the server's own OpenAPI description (`/openapi.json`).

Every operation KServe's app describes (V1, V2, `/api/predict/`, health, metadata) is
called in-process with generated requests, both schema-valid ones (positive) and ones
that break the schema (negative). No request may get a 5xx, and answers must have the
described content type and, where a schema describes them, conform to it. The model's
own operations are fuzzed twice: with random model names (404s) and with the served model's name, so
the generated bodies reach the codecs. The repository load/unload operations are left
out: unloading the session's model would break the other tests.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

MAX_EXAMPLES = 30
MODEL = "model"
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def schema(client):
    """The app's OpenAPI description, as the running app serves it."""
    loaded = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    loaded.app = client.app
    return loaded.exclude(path_regex="^/v2/repository/")


@pytest.fixture(scope="module")
def session(client):
    """One in-process ASGI session for every call (schemathesis would open one per call)."""
    with asgi.get_client(client.app) as asgi_session:
        yield asgi_session


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def fuzz(operation, session, mode: GenerationMode, checks: list, **fixed) -> int:
    """Run generated cases against one operation; the number of cases that were generated."""
    strategy = operation.as_strategy(generation_mode=mode, **fixed)
    calls = []

    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case):
        response = case.call(session=session)
        calls.append(response.status_code)
        case.validate_response(response, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # Nothing in the operation's description can be broken (no body, free-form strings).
        assert mode is GenerationMode.NEGATIVE and not calls
    return len(calls)


def test_schema_describes_the_inference_routes(schema):
    paths = {operation.path for operation in operations(schema)}
    assert {
        "/v1/models/{model_name}:predict",
        "/v2/models/{model_name}/infer",
        "/api/predict/",
    } <= (paths)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_server_error(schema, session, mode):
    """Every operation, random path parameters: never a 5xx, answers as described."""
    fuzzed = {}
    for operation in operations(schema):
        checks = [not_a_server_error]
        # Not status_code_conformance: KServe's description documents only 200 and 422, so
        # every 400/404/415 would count as undocumented. /metrics is Prometheus text, which
        # KServe's description calls application/json.
        if mode is GenerationMode.POSITIVE and operation.path != "/metrics":
            checks += [content_type_conformance, response_schema_conformance]
        fuzzed[operation.path] = fuzz(operation, session, mode, checks)
    assert fuzzed["/v2/models/{model_name}/infer"] and fuzzed["/api/predict/"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_inference_bodies_for_the_served_model(schema, session, mode):
    """Generated bodies for the served model reach the codecs: a 200 or a 4xx, never a 5xx."""
    inference = schema.include(path_regex=r"(:predict|/infer|^/api/predict/)$")
    assert len(operations(inference)) == 3
    for operation in operations(inference):
        fixed = (
            {"path_parameters": {"model_name": MODEL}} if "{model_name}" in operation.path else {}
        )
        fuzz(operation, session, mode, [not_a_server_error], **fixed)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/unknown?model_version=1",
        "/v2/models/model/ready?model_version=1",
        "/v2/models/model/versions/1/ready",
    ],
)
def test_model_version_is_a_client_error(client, path):
    response = client.get(path)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
