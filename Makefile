# edgecls — the commands a reader needs. `make demo` and `make test` install first when .venv is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 3

# The oldest LiteRT the runtime extra allows (pyproject: ai-edge-litert>=1.2): every .tflite edgecls writes
# must load and agree there too (tests/test_runtime_compat.py). A Pi (aarch64) resolves 1.4.0 today.
OLD_LITERT := 1.2.0
OLD_LITERT_VENV := .venv-litert-$(OLD_LITERT)

.PHONY: install demo lint test test-fast bench clean

$(BIN)/edgecls: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/edgecls

install: $(BIN)/edgecls  ## create .venv and install edgecls with its train + runtime + dev extras

demo: $(BIN)/edgecls  ## the whole pipeline on the built-in digits: train, prune, distill, quantize, export, bench → runs/digits/report.md
	$(BIN)/edgecls pipeline examples/digits.toml
	@echo "report: runs/digits/report.md"

$(OLD_LITERT_VENV)/bin/python:
	$(PYTHON) -m venv $(OLD_LITERT_VENV)
	$(OLD_LITERT_VENV)/bin/pip install --quiet "ai-edge-litert==$(OLD_LITERT)" "numpy<3" opencv-python-headless

lint: $(BIN)/edgecls  ## ruff (formatting and lint rules), then lint-imports (the layering contracts): pyproject.toml
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo

test: lint $(OLD_LITERT_VENV)/bin/python  ## lint, then the whole test suite (old-LiteRT compatibility included)
	EDGECLS_OLD_LITERT_PYTHON=$(OLD_LITERT_VENV)/bin/python $(BIN)/pytest -q -p no:cacheprovider --durations=15

test-fast: $(BIN)/edgecls  ## the tests not marked slow (no real training or conversion): about a minute
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

bench: $(BIN)/edgecls  ## every benchmarks/*.py; JSON results in benchmarks/results/
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf runs .pytest_cache .ruff_cache $(OLD_LITERT_VENV)
