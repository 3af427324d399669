"""Smoke-test an InferenceService revision through the ingress with real V1 and V2 requests.

    python .github/scripts/smoke_test.py --ingress https://34.1.2.3 --ca-cert gateway-ca.crt \
        --host latest-torch-predictor-predictor.models.example.com --model torch-predictor

Connects to the ingress address and names the revision's host in the Host header and, over
HTTPS, as the TLS server name, whose certificate must chain to --ca-cert (default: the
system's CAs). Sends [1, 2] to both protocols; with --expect 2,4 the predictions must equal
those values. Exits non-zero on the first failure.
"""

import argparse
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from predictor.rollout.analysis import Target  # noqa: E402

INPUT = [1.0, 2.0]


def post(session: requests.Session, url: str, body: dict, timeout: float) -> dict:
    response = session.post(url, json=body, timeout=timeout)
    response.raise_for_status()
    return response.json()


def check(name: str, got: list, expect: list[float] | None) -> None:
    if len(got) != len(INPUT):
        raise AssertionError(f"{name}: expected {len(INPUT)} results, got {got!r}")
    if expect is not None and [float(x) for x in got] != expect:
        raise AssertionError(f"{name}: expected {expect!r}, got {got!r}")
    print(f"{name}: ok {got!r}")


def smoke(target: Target, model: str, expect: list[float] | None, timeout: float) -> None:
    with target.session() as session:
        v1 = post(
            session, f"{target.base_url}/v1/models/{model}:predict", {"instances": INPUT}, timeout
        )
        check("v1", v1["predictions"], expect)
        tensor = {"name": "input-0", "datatype": "FP32", "shape": [2], "data": INPUT}
        v2 = post(
            session, f"{target.base_url}/v2/models/{model}/infer", {"inputs": [tensor]}, timeout
        )
        check("v2", v2["outputs"][0]["data"], expect)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingress", required=True, help="e.g. https://34.1.2.3")
    parser.add_argument("--host", required=True, help="host name of the revision to test")
    parser.add_argument("--ca-cert", help="CA bundle (PEM) the gateway's certificate chains to")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--expect", default="", help="comma-separated expected predictions")
    parser.add_argument("--attempts", type=int, default=10, help="tries before giving up")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args()
    expect = [float(x) for x in args.expect.split(",")] if args.expect else None
    target = Target("smoke", args.ingress.rstrip("/"), host=args.host, ca_cert=args.ca_cert)

    for attempt in range(1, args.attempts + 1):
        try:
            smoke(target, args.model, expect, args.timeout)
            return 0
        except (requests.RequestException, KeyError, IndexError, ValueError) as err:
            # The route and its certificate may take a while after the revision is ready.
            print(f"attempt {attempt}/{args.attempts}: {err!r}", file=sys.stderr)
            time.sleep(min(2 * attempt, 15))
        except AssertionError as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
    print("FAILED: no successful response", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
