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

# The main job on the embedded default: plan the toy and paper grids, generate the toy
# world, launch the toy grid on this machine as branches of constant-LR trunks (2 models x
# 2 data sets x 5 samples-seen values: 20 points, each cooled down from its trunk's
# checkpoint, trained and evaluated for real on the CPU), follow it until every point is
# stored (results.db, mlflow.db; each landing refits the laws), query it back, fit
# E = β·C^α and write the report with its plots. Rerunning it trains nothing again:
# finished points are skipped.
TOY := sweep=toy samples_mode=branches 'samples_seen=[4k,8k,16k,32k,64k]'

demo: setup
	$(BIN)/scaling plan $(TOY)
	$(BIN)/scaling plan sweep=paper gpu=a100
	$(BIN)/scaling toyworld
	$(BIN)/scaling launch $(TOY) cluster=local
	$(BIN)/scaling status $(TOY) --watch --every 15
	$(BIN)/scaling runs sweep=toy status=succeeded
	$(BIN)/scaling fit sweep=toy
	$(BIN)/scaling report sweep=toy out=reports/toy
	@echo "results: results.db (scaling runs sweep=toy), mlflow.db (mlflow ui --backend-store-uri sqlite:///mlflow.db), runs/ (one directory per point)"
	@echo "the toy grid's law: scaling fit sweep=toy; its report and plots: reports/toy/report.html"

lint: setup
	$(BIN)/ruff check scaling tests bench
	$(BIN)/ruff format --check scaling tests bench

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[train,dev,bench]'
	touch $(BENCH_STAMP)

# Every benchmark, then one table of their figures with the peers measured beside them:
# bench/results.md (and bench/results.json).
bench: $(BENCH_STAMP)
	$(BIN)/python bench/plan_bench.py
	# needs root: the one-node dev Slurm (launchers/slurm-dev-cluster.sh), Hydra's submitit launcher beside us
	$(BIN)/python bench/dispatch_bench.py
	# 100,000 runs: status's ingest path and the bulk one; the filtered query beside MLflow's search_runs
	$(BIN)/python bench/store_bench.py
	$(BIN)/python bench/refit_bench.py
	$(BIN)/python bench/fit_bench.py
	# the error surface beside the chinchilla package, on Epoch AI's Chinchilla points
	$(BIN)/python bench/surface_bench.py
	$(BIN)/python bench/startup_bench.py
	$(BIN)/python bench/cost_calibration.py
	# CUDA if present (ViT-B-32, ViT-L-14), else a toy model on the CPU; open_clip's trainer beside us
	$(BIN)/python bench/gpu_train.py
	# the linear probe on the CPU and, if present, on CUDA: the same metrics, each device's time
	$(BIN)/python bench/probe_bench.py
	# the toy grid trained twice on this machine, separately and as branches (~20 min)
	$(BIN)/python bench/trajectories.py
	# `make demo` in a fresh clone (~10 min)
	$(BIN)/python bench/demo_bench.py
	# three scale fixes, each beside the commit before it (worktrees under /tmp/exp), same run
	$(BIN)/python bench/scale_fixes_bench.py
	$(BIN)/python bench/table.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
