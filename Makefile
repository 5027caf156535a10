# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench clean

# The virtual environment is rebuilt when the dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default. For now: plan the toy and paper grids, generate
# the toy world, train + evaluate one toy point for real on the CPU, store it (results.db,
# mlflow.db) and query it back.
demo: setup
	$(BIN)/scaling plan sweep=toy
	$(BIN)/scaling plan sweep=paper gpu=a100
	$(BIN)/scaling toyworld
	$(BIN)/scaling run sweep=toy model=toy-m data=toy-64k samples_seen=16k
	$(BIN)/scaling ingest sweep=toy
	$(BIN)/scaling runs sweep=toy status=succeeded

lint: setup
	$(BIN)/ruff check scaling tests bench
	$(BIN)/ruff format --check scaling tests bench

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/cost_calibration.py
	$(BIN)/python bench/store_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
