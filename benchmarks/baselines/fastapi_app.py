"""The original service's style: FastAPI + pydantic, `POST /api/predict/`.

`{"values_list": [1, 2, 3]}` -> torch tensor * 2 -> `{"error": false, "result":
{"tensor_list": [2, 4, 6]}}`, served by uvicorn with one worker.

Run: python benchmarks/baselines/fastapi_app.py --port 8080
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class PredictRequest(BaseModel):
    values_list: list[float | int]


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/api/predict/")
def predict(request: PredictRequest) -> dict:
    result = torch.tensor(request.values_list) * 2
    return {"error": False, "result": {"tensor_list": result.tolist()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False)


if __name__ == "__main__":
    main()
