#!/usr/bin/env bash
# One command for the side-by-side benchmark; sets up everything it needs, then runs
# benchmarks/harness.py with the arguments given (e.g. --quick, --servers predictor,stock).
#   benchmarks/run.sh            full run, about 10 minutes on 2 cores
#   benchmarks/run.sh --quick    about 2-3 minutes
# A peer that cannot be installed here is skipped, and the report says so.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PIP_FLAGS=(--quiet --disable-pip-version-check)

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package) ..."
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi

make --no-print-directory .venv/.dev  # the project venv (kserve, torch, tritonclient, requests)
.venv/bin/python -m pip install "${PIP_FLAGS[@]}" -r benchmarks/requirements.txt

# Peers live in venvs of their own: their pins clash with kserve's.
peer_venv() {  # name requirements-file
  local venv=$1 requirements=$2
  if [ -f "$venv/.installed" ] && [ "$venv/.installed" -nt "$requirements" ]; then
    return 0
  fi
  echo "installing $venv from $requirements ..."
  if "$PYTHON" -m venv "$venv" && "$venv/bin/pip" install "${PIP_FLAGS[@]}" -r "$requirements"; then
    touch "$venv/.installed"
  else
    echo "NOTE: $requirements is not installable here; that peer will be skipped."
    rm -rf "$venv"
  fi
}
peer_venv .venv-bench-mlserver benchmarks/requirements-mlserver.txt
peer_venv .venv-bench-pytriton benchmarks/requirements-pytriton.txt

exec .venv/bin/python -m benchmarks.harness "$@"
