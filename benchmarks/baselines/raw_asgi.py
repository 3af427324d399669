"""The ceiling: a raw ASGI app that reads the request body and answers a constant.

No framework, no parsing, no model: what uvicorn itself can do on this machine.

Run: python benchmarks/baselines/raw_asgi.py --port 8080
"""

from __future__ import annotations

import argparse

import uvicorn

BODY = b'{"predictions":[2.0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:
        message = await receive()
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
