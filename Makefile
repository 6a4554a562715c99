PYTHON ?= python3

.PHONY: install test quickstart

# Installs what is missing (d2kd and its Python dependencies); detectron2 must already be there.
install:
	$(PYTHON) -m pip install -q -e ".[dev]"

# The test suite CI runs (.ci/run): one worker per core (most tests are single-threaded
# subprocesses); the slowest tests are listed at the end.
test: install
	$(PYTHON) -m pytest -q -n $(shell nproc 2>/dev/null || echo 2) --durations=15 tests

# Teacher (cached after the first run), baseline student, distilled student, one AP table.
quickstart: install
	$(PYTHON) tools/quickstart.py
