# syntax=docker/dockerfile:1
# PyTorch KServe predictor.
#   CPU (default): docker build -t torch-predictor .
#   CUDA:          docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#                    -t torch-predictor:cuda .
# The CUDA wheels bring their own CUDA runtime; the GPU node only provides the driver.
# ---------------------------------------------------------------- build: a venv with the deps
FROM python:3.11-slim-bookworm AS build

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# Dependencies first, so that source changes reuse this layer.
COPY requirements.txt /tmp/requirements.txt
# torch comes from PyTorch's index for the chosen variant, pinned as in requirements.txt;
# the rest of requirements.txt then finds it already satisfied.
RUN grep -E '^torch==' /tmp/requirements.txt > /tmp/torch.txt \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim-bookworm AS runtime

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
