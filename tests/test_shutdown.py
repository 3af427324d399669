"""Graceful shutdown: SIGTERM under load loses no request that was already accepted."""

from __future__ import annotations

import concurrent.futures
import signal

import pytest
import requests

from tests import toy_models
from tests.serving import PredictorProcess

pytestmark = pytest.mark.slow


def test_sigterm_finishes_accepted_requests_then_exits_zero(tmp_path):
    toy_models.save_state_dict(tmp_path, toy_models.Slow(), None)
    server = PredictorProcess(
        tmp_path,
        extra_args=["--model_class", "tests.toy_models:Slow", "--grace_period", "20"],
        ready_timeout=120,
    ).start()
    url = f"{server.http_url}/v1/models/model:predict"
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            # One inference thread: these queue up, about 1.5 s each, all accepted.
            accepted = [
                pool.submit(requests.post, url, json={"instances": [float(i)]}, timeout=60)
                for i in range(3)
            ]
            server.wait_for_inflight(3)
            server.process.send_signal(signal.SIGTERM)
            answers = [future.result() for future in accepted]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert sorted(a.json()["predictions"][0] for a in answers) == [0.0, 2.0, 4.0]
        assert server.process.wait(timeout=60) == 0
        with pytest.raises(requests.ConnectionError):
            requests.post(url, json={"instances": [1.0]}, timeout=5)
    finally:
        server.stop()
