# Two entry points do all set-up themselves on a fresh machine:
#   make serve   - serve the bundled model (REST :8080, gRPC :8081)
#   make test    - run the whole test suite
# Extra predictor options: make serve ARGS="--model_name demo --http_port 9000"

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# checkov pins its own dependency tree, so it lives in a venv of its own.
CHECKOV_VENV ?= .venv-checkov
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: serve test lint bench soak clean shellcheck prometheus lock

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt -r requirements-dev.txt
	touch $@

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install $(PIP_FLAGS) "checkov==3.3.30"
	touch $@

serve: $(VENV)/.runtime
	$(PY) -m predictor $(ARGS)

# actionlint checks workflow scripts with shellcheck when it is on PATH (Debian package).
shellcheck:
	@command -v shellcheck >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null) ; } \
	  || echo "note: shellcheck not installed; workflow scripts are linted without it"

# A real Prometheus (and promtool) for the dashboard and alert tests (Debian package).
prometheus:
	@command -v prometheus >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus >/dev/null) ; } \
	  || echo "note: prometheus not installed; the dashboard and alert tests skip"

test: $(VENV)/.dev $(CHECKOV_VENV)/.installed shellcheck prometheus
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy predictor

bench: $(VENV)/.dev
	benchmarks/run.sh $(ARGS)

soak: $(VENV)/.dev
	$(PY) -m benchmarks.soak $(ARGS)

# Regenerates the hash-pinned requirements-{cpu,cuda,rollout}.lock from requirements.txt and
# requirements-rollout.txt (scripts/lock.sh; needs PyPI and PyTorch's CPU index). Pins are kept
# unless LOCK_ARGS says otherwise, e.g. LOCK_ARGS=--upgrade or LOCK_ARGS="--upgrade-package numpy";
# LOCK_ARGS=--check only verifies. TORCH_CPU_FIND_LINKS=DIR takes the +cpu torch wheel from DIR.
TORCH_CPU_FIND_LINKS ?= https://download.pytorch.org/whl/cpu/torch/
lock: $(VENV)/.dev
	UV=$(VENV)/bin/uv TORCH_CPU_FIND_LINKS="$(TORCH_CPU_FIND_LINKS)" scripts/lock.sh $(LOCK_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV)
