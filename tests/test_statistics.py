"""Triton's statistics extension (`GET /v2/models[/{name}]/stats`) and the histograms that
explain latency (/metrics), against real server processes: the counts must match the requests
sent, over V1, V2, gRPC and /api/predict, with and without adaptive batching, and
tritonclient's own HTTP client must read the statistics."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.serving import PredictorProcess

V1 = "/v1/models/model:predict"
V2 = "/v2/models/model/infer"


def v2_body(rows: int) -> dict:
    data = list(range(rows * 3))
    return {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [rows, 3], "data": data}]}


def stats(server: PredictorProcess, path: str = "/v2/models/model/stats") -> dict:
    response = requests.get(server.http_url + path, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def server():
    with PredictorProcess() as process:
        yield process


def test_a_fresh_server_counts_nothing_not_even_its_warm_up(server):
    [model] = stats(server)["model_stats"]
    assert model["name"] == "model"
    assert model["inference_count"] == model["execution_count"] == model["last_inference"] == 0
    assert all(v == {"count": 0, "ns": 0} for v in model["inference_stats"].values())
    assert model["batch_stats"] == []
    # The request series exist at zero before any request, so a first request's increase
    # shows in rates (Prometheus needs a sample from before it).
    for protocol in ("v1", "v2", "grpc", "legacy"):
        for status in ("200", "500"):
            labels = f'model="model",protocol="{protocol}",status="{status}"'
            assert server.metric(f"predictor_requests_total{{{labels}}}") == 0


def test_counts_match_the_requests_sent_on_every_protocol(server):
    sent_at_ms = time.time() * 1000
    for _ in range(3):
        assert requests.post(server.http_url + V1, json={"instances": [1, 2]}).status_code == 200
    for rows in (1, 4):
        assert requests.post(server.http_url + V2, json=v2_body(rows)).status_code == 200
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))
    request = pb.ModelInferRequest(model_name="model")
    request.inputs.add(name="input-0", datatype="FP32", shape=[2, 2])
    request.raw_input_contents.append(np.ones((2, 2), np.float32).tobytes())
    stub.ModelInfer(request, timeout=10)
    bad = requests.post(server.http_url + V2, json={"inputs": [{"name": "input-0"}]})
    assert bad.status_code == 400

    [model] = stats(server)["model_stats"]
    inference = model["inference_stats"]
    assert inference["success"]["count"] == 6
    assert inference["fail"]["count"] == 1
    assert inference["queue"]["count"] == 6
    # V1 [1, 2] is 2 rows; V2 1 and 4 rows; gRPC 2 rows.
    assert model["inference_count"] == 3 * 2 + 1 + 4 + 2
    assert model["execution_count"] == 6
    for stage in ("compute_input", "compute_infer", "compute_output"):
        assert inference[stage]["count"] == 6
        assert inference[stage]["ns"] > 0
    # The stages happen inside the requests: together they take less than the requests.
    inside = sum(inference[s]["ns"] for s in ("queue", "compute_input", "compute_infer"))
    assert inside < inference["success"]["ns"]
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in model["batch_stats"]} == {
        1: 1,
        2: 4,
        4: 1,
    }
    assert sent_at_ms - 1000 <= model["last_inference"] <= time.time() * 1000 + 1000
    assert stats(server, "/v2/models/stats")["model_stats"] == [model]

    # The same requests in the histograms; decode is timed for the bad request too only if it
    # got past decoding (it did not), encode only for answers.
    legacy = requests.post(server.http_url + "/api/predict/", json={"values_list": [1, 2]})
    assert legacy.status_code == 200
    for protocol, count in (("v1", 3), ("v2", 2), ("grpc", 1), ("legacy", 1)):
        labels = f'{{model="model",protocol="{protocol}"}}'
        assert server.metric(f"predictor_decode_seconds_count{labels}") == count, protocol
        assert server.metric(f"predictor_encode_seconds_count{labels}") == count, protocol
    assert server.metric('predictor_queue_seconds_count{model="model"}') == 7
    assert server.metric('predictor_forward_seconds_count{model="model"}') == 7
    assert server.metric('predictor_forward_seconds_sum{model="model"}') > 0
    # KServe's own histograms, for dashboards built on them.
    for kserve_series in ("preprocess", "predict", "postprocess"):
        series = f'request_{kserve_series}_seconds_count{{model_name="model"}}'
        assert server.metric(series) == 7, series


def test_unknown_models_and_versions_are_404s(server):
    response = requests.get(server.http_url + "/v2/models/nope/stats", timeout=10)
    assert response.status_code == 404
    assert "nope" in response.json()["error"]
    versioned = requests.get(server.http_url + "/v2/models/model/versions/3/stats", timeout=10)
    assert versioned.status_code == 404
    assert "served unversioned" in versioned.json()["error"]
    assert "statistics" in requests.get(server.http_url + "/v2", timeout=10).json()["extensions"]


def test_a_model_named_stats_keeps_its_metadata_url():
    """/v2/models/stats is every model's statistics, unless a model is called `stats`: its
    own URL wins, and its statistics are at /v2/models/stats/stats."""
    with PredictorProcess(model_name="stats") as server:
        metadata = requests.get(server.http_url + "/v2/models/stats", timeout=10).json()
        assert metadata["name"] == "stats" and "inputs" in metadata
        [model] = requests.get(server.http_url + "/v2/models/stats/stats", timeout=10).json()[
            "model_stats"
        ]
        assert model["name"] == "stats"


def test_batched_requests_count_once_each_and_their_batches_once_each():
    args = ["--max_batch_size", "8", "--max_batch_delay_ms", "200"]
    with PredictorProcess(extra_args=args) as server:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(server.http_url + V2, json=v2_body(1), timeout=30),
                    range(8),
                )
            )
        assert [a.status_code for a in answers] == [200] * 8
        client = httpclient.InferenceServerClient(server.http_target)
        [model] = client.get_inference_statistics("model")["model_stats"]
        batches = server.metric('predictor_batch_delay_seconds_count{model="model"}')
        delay = server.metric('predictor_batch_delay_seconds_sum{model="model"}')
    assert model["inference_count"] == 8
    assert model["inference_stats"]["success"]["count"] == 8
    assert model["inference_stats"]["queue"]["count"] == 8
    # Waiting for company is queueing: the batch delay shows up there.
    assert model["inference_stats"]["queue"]["ns"] > 0
    assert model["execution_count"] < 8
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in model["batch_stats"]}
    assert sum(size * count for size, count in sizes.items()) == 8
    assert max(sizes) > 1
    assert batches == model["execution_count"]  # one delay per batch
    assert delay is not None and delay > 0
