# edgecls — the commands a reader needs. `make demo` and `make test` install first when .venv is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 3

# The oldest LiteRT the runtime extra allows (pyproject: ai-edge-litert>=1.1.1): every .tflite edgecls writes
# must load, agree and read in `edgecls info` there too (tests/test_runtime_compat.py). 1.1.0 and 1.0.x cannot
# create an interpreter under NumPy 2, which pip resolves beside them. A Pi (aarch64) resolves 2.3.0 today
# (tests/test_box.py).
OLD_LITERT := 1.1.1
OLD_LITERT_VENV := .venv-litert-$(OLD_LITERT)

# The LiteRT the Pi OS 32-bit box resolves (tflite-runtime's last release, the only one with an armv7l wheel), here
# on x86 with NumPy 1 as there: the box's reference kernels are compared with the same release's (tests/test_box.py;
# reference kernels change between releases, the ISA must not change them).
ARMV7_TFLITE := 2.14.0
ARMV7_TFLITE_VENV := .venv-tflite-runtime-$(ARMV7_TFLITE)

.PHONY: install demo lint test test-fast bench boxes clean

$(BIN)/edgecls: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/edgecls

install: $(BIN)/edgecls  ## create .venv and install edgecls with its train + runtime + dev extras

demo: $(BIN)/edgecls  ## the whole pipeline on the built-in digits: train, prune, distill, quantize, export, bench → runs/digits/report.md
	$(BIN)/edgecls pipeline examples/digits.toml
	@echo "report: runs/digits/report.md"

# typer and rich: `edgecls info` runs there as the console script (tests/litert_probe.py).
$(OLD_LITERT_VENV)/bin/typer:
	$(PYTHON) -m venv $(OLD_LITERT_VENV)
	$(OLD_LITERT_VENV)/bin/pip install --quiet "ai-edge-litert==$(OLD_LITERT)" "numpy<3" opencv-python-headless typer rich

$(ARMV7_TFLITE_VENV)/.installed:
	$(PYTHON) -m venv $(ARMV7_TFLITE_VENV)
	$(ARMV7_TFLITE_VENV)/bin/pip install --quiet "tflite-runtime==$(ARMV7_TFLITE)" "numpy<2" opencv-python-headless
	touch $@

# mkdocs: not --quiet, which hides the warnings --strict fails on (and then passes). The site goes to site/ (ignored).
lint: $(BIN)/edgecls  ## ruff (formatting and lint rules), lint-imports (the layering contracts), mypy --strict on edgecls.runtime: pyproject.toml; mkdocs build --strict: docs/, mkdocs.yml
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --site-dir site

# -rs: a skipped test prints its reason (the Pi OS boxes skip where this machine cannot run them: not root, no
# qemu-user/binfmt_misc, no debootstrap).
# The Pi OS box tests (tests/test_box.py) run in a pytest session of their own beside the rest: emulated Python
# keeps one core busy for minutes (their first run also builds the boxes); their output follows the main session's,
# and either failing fails the target. The rest runs in two pytest-xdist workers, a test file each at a time
# (--dist loadfile: a module's fixtures are built once): measured on a fresh clone (AMD EPYC, 2 cores), one serial
# session used 1.26 cores on average (user+sys 44 min in 35 min of wall clock), a single core once the boxes were done.
test: lint $(OLD_LITERT_VENV)/bin/typer $(ARMV7_TFLITE_VENV)/.installed  ## lint, then the whole test suite (old-LiteRT compatibility and the Pi OS boxes included)
	@boxlog=$$(mktemp); \
	EDGECLS_TFLITE_RUNTIME_PYTHON=$(CURDIR)/$(ARMV7_TFLITE_VENV)/bin/python \
		$(BIN)/pytest -q -rs -p no:cacheprovider --durations=5 tests/test_box.py >$$boxlog 2>&1 & boxes=$$!; \
	EDGECLS_OLD_LITERT_PYTHON=$(OLD_LITERT_VENV)/bin/python $(BIN)/pytest -q -rs -p no:cacheprovider --durations=30 \
		-n 2 --dist loadfile --ignore=tests/test_box.py; suite=$$?; \
	wait $$boxes; boxed=$$?; echo "== tests/test_box.py (the Pi OS boxes)"; cat $$boxlog; rm -f $$boxlog; \
	test $$suite -eq 0 && test $$boxed -eq 0

test-fast: $(BIN)/edgecls  ## the tests not marked slow (no real training or conversion): about a minute
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

boxes: $(BIN)/edgecls  ## Pi OS 64-bit and 32-bit userlands under qemu-user (root), cached in ~/.cache/edgecls/boxes
	$(BIN)/python tests/box/build.py

bench: $(BIN)/edgecls  ## every benchmarks/*.py; JSON results in benchmarks/results/
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf runs .pytest_cache .ruff_cache $(OLD_LITERT_VENV) $(ARMV7_TFLITE_VENV)
