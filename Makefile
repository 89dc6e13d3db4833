# Two commands: `make serve` (install + run on the embedded default) and `make test` (install + every test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Models are fetched once per machine and shared by every checkout and test run.
export FACEQUEUE_MODEL_DIR ?= $(HOME)/.cache/facequeue/models

.PHONY: serve test lint unit integration accuracy services

$(BIN)/facequeue: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/facequeue
	$(BIN)/pip install --quiet -e ".[test,peers]"
	# The peer to beat; its dlib comes from dlib-bin and its model files from our pack (tests/accuracy/peer.py).
	$(BIN)/pip install --quiet --no-deps face_recognition==1.3.0
	touch $@

serve: $(BIN)/facequeue
	$(BIN)/facequeue serve

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

services:
	deploy/dev-services.sh

unit: $(VENV)/.test-deps
	$(BIN)/python -m pytest tests/unit -q

integration: $(VENV)/.test-deps services
	$(BIN)/python -m pytest tests/integration -q

accuracy: $(VENV)/.test-deps
	$(BIN)/python -m pytest tests/accuracy -q -s

test: lint unit integration accuracy
