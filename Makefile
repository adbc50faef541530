# edgecls — the commands a reader needs. `make demo` and `make test` install first when .venv is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 3

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

lint: $(BIN)/edgecls  ## ruff: formatting and lint rules as pyproject.toml's [tool.ruff] sets them
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: lint  ## lint, then the whole test suite
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

test-fast: $(BIN)/edgecls  ## the tests not marked slow (no real training or conversion): about a minute
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

bench: $(BIN)/edgecls  ## every benchmarks/*.py; JSON results in benchmarks/results/
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf runs .pytest_cache .ruff_cache
