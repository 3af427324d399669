# syntax=docker/dockerfile:1
# PyTorch KServe predictor (linux/amd64).
#   CPU (default): docker build -t torch-predictor .
#   CUDA:          docker build --build-arg TORCH_VARIANT=cuda -t torch-predictor:cuda .
# Every Python package comes from a hash-pinned lock compiled from requirements.txt by
# `make lock`: requirements-cpu.lock (torch +cpu from PyTorch's CPU index) or
# requirements-cuda.lock (PyPI's torch, a CUDA 13 build). The CUDA wheels bring their own CUDA
# runtime; the GPU node only provides the driver (CUDA 13 needs driver 580 or newer).
# The base image is pinned by digest (the multi-arch index); Dependabot moves the digest.
# ---------------------------------------------------------------- build: a venv with the deps
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS build

ARG TORCH_VARIANT=cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# Dependencies first, so that source changes reuse this layer.
COPY requirements-cpu.lock requirements-cuda.lock /tmp/
# The lock lists every package with its hashes: pip resolves nothing and verifies each file.
RUN case "${TORCH_VARIANT}" in \
      cpu|cuda) ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, got '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac \
    && pip install --no-cache-dir --require-hashes --no-deps -r "/tmp/requirements-${TORCH_VARIANT}.lock" \
    && pip check

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY models/ /app/models/
COPY predictor/ /app/predictor/

USER 1000:1000

# REST (V1, V2, /api/predict) and gRPC (V2).
EXPOSE 8080 8081

# Kubernetes uses KServe's probes; this serves plain `docker run`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]

# Serves /mnt/models when KServe's storage initializer filled it from STORAGE_URI, else the
# bundled models/doubler; `docker run IMAGE --model_dir /path` overrides either.
ENTRYPOINT ["python", "-m", "predictor"]
CMD []
