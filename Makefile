PYTHON ?= python3

.PHONY: install test quickstart

# Installs what is missing (d2kd and its Python dependencies); detectron2 must already be there.
install:
	$(PYTHON) -m pip install -q -e ".[dev]"

# The test suite CI runs (.ci/run).
test: install
	$(PYTHON) -m pytest -q tests

# Teacher (cached after the first run), baseline student, distilled student, one AP table.
quickstart: install
	$(PYTHON) tools/quickstart.py
