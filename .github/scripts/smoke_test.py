"""Smoke-test an InferenceService revision through the ingress with real V1 and V2 requests.

    python .github/scripts/smoke_test.py --ingress http://34.1.2.3 \
        --host latest-torch-predictor-predictor.models.example.com --model torch-predictor

Sends [1, 2] to both protocols; with --expect 2,4 the predictions must equal those values.
Exits non-zero on the first failure.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

INPUT = [1.0, 2.0]


def post(url: str, host: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Host": host, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def check(name: str, got: list, expect: list[float] | None) -> None:
    if len(got) != len(INPUT):
        raise AssertionError(f"{name}: expected {len(INPUT)} results, got {got!r}")
    if expect is not None and [float(x) for x in got] != expect:
        raise AssertionError(f"{name}: expected {expect!r}, got {got!r}")
    print(f"{name}: ok {got!r}")


def smoke(ingress: str, host: str, model: str, expect: list[float] | None, timeout: float) -> None:
    v1 = post(f"{ingress}/v1/models/{model}:predict", host, {"instances": INPUT}, timeout)
    check("v1", v1["predictions"], expect)

    v2_body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2], "data": INPUT}]}
    v2 = post(f"{ingress}/v2/models/{model}/infer", host, v2_body, timeout)
    check("v2", v2["outputs"][0]["data"], expect)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingress", required=True, help="e.g. http://34.1.2.3")
    parser.add_argument("--host", required=True, help="Host header of the revision to test")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--expect", default="", help="comma-separated expected predictions")
    parser.add_argument("--attempts", type=int, default=10, help="tries before giving up")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args()
    expect = [float(x) for x in args.expect.split(",")] if args.expect else None

    for attempt in range(1, args.attempts + 1):
        try:
            smoke(args.ingress.rstrip("/"), args.host, args.model, expect, args.timeout)
            return 0
        except (urllib.error.URLError, TimeoutError, KeyError, IndexError, ValueError) as err:
            # The route may take a few seconds to appear after the revision is ready.
            print(f"attempt {attempt}/{args.attempts}: {err!r}", file=sys.stderr)
            time.sleep(min(2 * attempt, 15))
        except AssertionError as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
    print("FAILED: no successful response", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
