#!/usr/bin/env bash
# Regenerates the hash-pinned lock files with `uv pip compile` (run it as `make lock`):
#
#   requirements-cpu.lock      requirements.txt for the image (default, CPU torch)
#   requirements-cuda.lock     requirements.txt for the image built with TORCH_VARIANT=cuda
#   requirements-rollout.lock  requirements-rollout.txt for the cluster-access action
#
# The image locks target python:3.11-slim-bookworm on x86_64 (CPython 3.11, glibc 2.36), the
# rollout lock the ubuntu-24.04 runner (glibc 2.39). uv resolves for that platform and takes the
# hashes from the indexes, so no wheel is downloaded. Pins already in a lock are kept unless
# requirements*.txt needs otherwise or uv is asked to move them:
#
#   scripts/lock.sh                              refresh all locks, keep existing pins
#   scripts/lock.sh --upgrade                    move every pin to the newest allowed release
#   scripts/lock.sh --upgrade-package numpy      move one package
#   scripts/lock.sh --check                      fail if a lock is not what the inputs give
#                                                (pins; uv reuses a lock's hashes, pip checks them)
#
# Environment:
#   UV                    the uv binary (default: uv on PATH; `make lock` uses the dev venv's)
#   TORCH_CPU_FIND_LINKS  where the torch==<version>+cpu wheel is found: PyTorch's CPU index
#                         page (default) or a local directory holding that wheel. It only feeds
#                         the resolution; the lock names the public index, never this location.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

UV=${UV:-uv}
TORCH_CPU_FIND_LINKS=${TORCH_CPU_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
IMAGE_PLATFORM=x86_64-manylinux_2_36   # Debian bookworm's glibc
RUNNER_PLATFORM=x86_64-manylinux_2_39  # Ubuntu 24.04's glibc
PYTHON_VERSION=3.11

check=0
uv_args=()
for arg in "$@"; do
  if [[ $arg == --check ]]; then
    check=1
  else
    uv_args+=("$arg")
  fi
done

# Options from the environment must not change what is locked.
unset UV_FIND_LINKS UV_CONSTRAINT UV_OVERRIDE UV_BUILD_CONSTRAINT UV_EXTRA_INDEX_URL

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

torch_version=$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' requirements.txt)
[[ -n $torch_version ]] || { echo "requirements.txt has no torch==<version> pin" >&2; exit 1; }

# compile LOCK SOURCE PLATFORM DESCRIPTION [INDEX_LINE] -- [UV_OPTIONS...]
compile() {
  local lock=$1 source=$2 platform=$3 description=$4 index_line=$5
  shift 6
  local out="$work/$lock"
  # uv keeps the pins of an existing output file, so start from the committed lock.
  if [[ -f $lock ]]; then cp "$lock" "$out"; fi
  "$UV" pip compile "$source" \
    --quiet --no-config \
    --generate-hashes \
    --python-version "$PYTHON_VERSION" \
    --python-platform "$platform" \
    --custom-compile-command "make lock" \
    --output-file "$out" \
    "$@" ${uv_args[@]+"${uv_args[@]}"}
  if [[ $(sed -n 2p "$out") != "#    make lock" ]]; then
    echo "$lock: unexpected header from uv" >&2
    exit 1
  fi
  # uv's two header lines, then how the file was made, the index pip needs, the requirements.
  {
    head -n 2 "$out"
    echo "#    = scripts/lock.sh: uv pip compile $source --generate-hashes" \
      "--python-version $PYTHON_VERSION --python-platform $platform"
    echo "# $description"
    echo "# Install with: pip install --require-hashes -r $lock"
    if [[ -n $index_line ]]; then echo "$index_line"; fi
    tail -n +3 "$out"
  } > "$out.new"
  mv "$out.new" "$out"
}

compile requirements-cpu.lock requirements.txt "$IMAGE_PLATFORM" \
  "Linux x86_64, CPython $PYTHON_VERSION, glibc 2.36 (python:3.11-slim-bookworm): torch $torch_version+cpu from PyTorch's CPU index, the rest from PyPI." \
  "--extra-index-url $TORCH_CPU_INDEX" -- \
  --find-links "$TORCH_CPU_FIND_LINKS"
if ! grep -q "^torch==$torch_version+cpu " "$work/requirements-cpu.lock"; then
  echo "requirements-cpu.lock: torch is not $torch_version+cpu; is it in $TORCH_CPU_FIND_LINKS?" >&2
  exit 1
fi

compile requirements-cuda.lock requirements.txt "$IMAGE_PLATFORM" \
  "Linux x86_64, CPython $PYTHON_VERSION, glibc 2.36 (python:3.11-slim-bookworm): everything from PyPI, whose Linux torch $torch_version is the CUDA build (nvidia-* runtime wheels)." \
  "" --
if grep -q '^torch==.*+' "$work/requirements-cuda.lock"; then
  echo "requirements-cuda.lock: torch must be PyPI's $torch_version, not a local variant" >&2
  exit 1
fi

compile requirements-rollout.lock requirements-rollout.txt "$RUNNER_PLATFORM" \
  "Linux x86_64, CPython $PYTHON_VERSION, glibc 2.39 (ubuntu-24.04 runner): the rollout CLI (python -m predictor.rollout), from PyPI." \
  "" --

status=0
for lock in requirements-cpu.lock requirements-cuda.lock requirements-rollout.lock; do
  if [[ $check == 1 ]]; then
    if ! diff -u "$lock" "$work/$lock"; then
      echo "$lock is out of date: run make lock" >&2
      status=1
    fi
  elif ! cmp -s "$work/$lock" "$lock" 2>/dev/null; then
    cp "$work/$lock" "$lock"
    echo "wrote $lock"
  fi
done
exit "$status"
