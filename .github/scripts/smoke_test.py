"""Smoke-test an InferenceService revision with real V1 and V2 requests, through the ingress
or through the API server's service proxy.

    python .github/scripts/smoke_test.py --ingress https://34.1.2.3 --ca-cert gateway-ca.crt \
        --host latest-torch-predictor-predictor.models.example.com --model torch-predictor
    python .github/scripts/smoke_test.py --model torch-predictor \
        --service-proxy models/torch-predictor-sha-0123456789ab-predictor:80

--ingress (Knative mode: a revision's tag URL) connects to the ingress address and names the
revision's host in the Host header and, over HTTPS, as the TLS server name, whose certificate
must chain to --ca-cert (default: the system's CAs). --service-proxy NAMESPACE/SERVICE[:PORT]
(Standard mode: a canary has a Service of its own but no host on the gateway) asks the API
server with kubectl, as the current kubeconfig context's user: `kubectl get --raw` for the
model's readiness, `kubectl create --raw -f BODY` for the POSTs to
/api/v1/namespaces/NAMESPACE/services/SERVICE:PORT/proxy/... (RBAC: services/proxy, get and
create). Sends [1, 2] to both protocols; with --expect 2,4 the predictions must equal those
values. Exits non-zero on the first failure.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from predictor.rollout.analysis import Target  # noqa: E402

INPUT = [1.0, 2.0]


Post = Callable[[str, dict], dict]


class ProxyError(Exception):
    """kubectl could not get an answer through the service proxy (worth another attempt)."""


def post(session: requests.Session, url: str, body: dict, timeout: float) -> dict:
    response = session.post(url, json=body, timeout=timeout)
    response.raise_for_status()
    return response.json()


class ServiceProxy:
    """A Service reached through the API server's service proxy, with kubectl."""

    def __init__(self, service: str, timeout: float, kubectl: str = "kubectl") -> None:
        namespace, _, name_port = service.partition("/")
        name, _, port = name_port.partition(":")
        if not namespace or not name:
            raise ValueError(f"--service-proxy wants NAMESPACE/SERVICE[:PORT], got {service!r}")
        self.prefix = f"/api/v1/namespaces/{namespace}/services/{name}:{port or '80'}/proxy"
        self.timeout = timeout
        self.kubectl = kubectl

    def _run(self, *args: str) -> dict:
        command = [self.kubectl, *args, f"--request-timeout={self.timeout:g}s"]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout + 10
            )
        except subprocess.TimeoutExpired as err:
            raise ProxyError(f"{' '.join(args[:3])}: no answer in {self.timeout:g}s") from err
        if result.returncode != 0:
            raise ProxyError(f"{' '.join(args[:3])}: {result.stderr.strip()[-500:]}")
        return json.loads(result.stdout)

    def get(self, path: str) -> dict:
        return self._run("get", "--raw", self.prefix + path)

    def post(self, path: str, body: dict) -> dict:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
            json.dump(body, file)
            file.flush()
            return self._run("create", "--raw", self.prefix + path, "-f", file.name)

    def wait_model_ready(self, model: str) -> None:
        answer = self.get(f"/v1/models/{model}")
        if answer.get("ready") is not True:
            raise ProxyError(f"model {model} is not ready yet: {answer!r}")


def check(name: str, got: list, expect: list[float] | None) -> None:
    if len(got) != len(INPUT):
        raise AssertionError(f"{name}: expected {len(INPUT)} results, got {got!r}")
    if expect is not None and [float(x) for x in got] != expect:
        raise AssertionError(f"{name}: expected {expect!r}, got {got!r}")
    print(f"{name}: ok {got!r}")


def smoke(send: Post, model: str, expect: list[float] | None) -> None:
    v1 = send(f"/v1/models/{model}:predict", {"instances": INPUT})
    check("v1", v1["predictions"], expect)
    tensor = {"name": "input-0", "datatype": "FP32", "shape": [2], "data": INPUT}
    v2 = send(f"/v2/models/{model}/infer", {"inputs": [tensor]})
    check("v2", v2["outputs"][0]["data"], expect)


def attempt(
    args: argparse.Namespace, proxy: ServiceProxy | None, expect: list[float] | None
) -> None:
    if proxy is not None:
        proxy.wait_model_ready(args.model)
        smoke(proxy.post, args.model, expect)
        return
    target = Target("smoke", args.ingress.rstrip("/"), host=args.host, ca_cert=args.ca_cert)
    with target.session() as session:
        smoke(
            lambda path, body: post(session, target.base_url + path, body, args.timeout),
            args.model,
            expect,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--ingress", help="e.g. https://34.1.2.3 (with --host)")
    where.add_argument(
        "--service-proxy",
        metavar="NAMESPACE/SERVICE[:PORT]",
        help="the revision's Service, through the API server (kubectl); port default 80",
    )
    parser.add_argument("--host", help="host name of the revision to test (with --ingress)")
    parser.add_argument("--ca-cert", help="CA bundle (PEM) the gateway's certificate chains to")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--expect", default="", help="comma-separated expected predictions")
    parser.add_argument("--attempts", type=int, default=10, help="tries before giving up")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args()
    if args.ingress and not args.host:
        parser.error("--ingress needs --host")
    proxy = None
    if args.service_proxy:
        try:
            proxy = ServiceProxy(args.service_proxy, args.timeout)
        except ValueError as err:
            parser.error(str(err))
    expect = [float(x) for x in args.expect.split(",")] if args.expect else None

    for number in range(1, args.attempts + 1):
        try:
            attempt(args, proxy, expect)
            return 0
        except (requests.RequestException, ProxyError, KeyError, IndexError, ValueError) as err:
            # The route and its certificate, or the canary's pods, may take a while after the
            # InferenceService is ready.
            print(f"attempt {number}/{args.attempts}: {err!r}", file=sys.stderr)
            time.sleep(min(2 * number, 15))
        except AssertionError as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
    print("FAILED: no successful response", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
