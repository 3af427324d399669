#!/usr/bin/env bash
# The GPU checks in one run on a GPU machine (Python 3.12 with CUDA torch preinstalled):
# the predictor's CUDA tests (tests/test_gpu.py), then the batching benchmark
# (benchmarks/gpu_batching.py). About 3-4 minutes on an H100.
#
# The wheels the machine lacks (kserve and its dependencies, tritonclient, orjson,
# pysimdjson) go in .whl/ first, from a machine that reaches PyPI:
#   EXTRA="orjson==3.13.0 pysimdjson==7.0.2" bash ../shared/device/kserve-wheels.sh
# then, on the GPU machine, from the repository root (with .whl/ carried along):
#   bash benchmarks/gpu_device_run.sh
# Results go to $OUT (or benchmarks/results): gpu_info.txt, gpu_tests.txt, gpu_batching.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
results=${OUT:-benchmarks/results}
mkdir -p "$results"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$results/gpu_info.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
  | tee -a "$results/gpu_info.txt"

timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 \
  | tee "$results/gpu_tests.txt"
tests=${PIPESTATUS[0]}

timeout 300 python3 -m benchmarks.gpu_batching --device cuda --seconds 8 \
  --out "$results/gpu_batching.md"
bench=$?
echo "tests exit $tests, benchmark exit $bench"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
