"""`scaling ingest`: a sweep's planned points and finished outcomes into the store and MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from scaling.outcome import Outcome, write_outcome
from scaling.plan import plan
from scaling.store import runs

OVERRIDES = ["model=[toy-s,toy-m]", "data=toy-4k", "samples_seen=4k"]


def finish(runs_root: Path, point_id: str, point: dict, acc1: float) -> None:
    """Leave a finished run directory behind, as a compute node does."""
    directory = runs_root / point_id
    directory.mkdir(parents=True)
    (directory / "point.json").write_text(json.dumps(point))
    metrics = {"toy_shapes": {"acc1": acc1}, "toy_captions": {"image_retrieval_recall@5": 0.1}}
    write_outcome(directory, Outcome(
        id=point_id, status="succeeded", samples_seen=point["samples_seen"],
        samples_seen_planned=point["samples_seen"], epochs=1, wall_time_s=3.0, train_time_s=2.0,
        samples_per_s=1984.0, metrics=metrics, loss={"epoch_mean": [3.9]},
        started_at="2026-11-23T10:00:00+00:00", finished_at="2026-11-23T10:00:03+00:00",
    ))  # fmt: skip


def test_ingest_records_plan_and_outcomes_then_mlflow(tmp_path: Path) -> None:
    overrides = [*OVERRIDES, f"runs_root={tmp_path / 'runs'}"]
    planned = plan("toy", overrides)
    done = planned.points[0].point
    finish(tmp_path / "runs", done.id, asdict(done), acc1=0.31)
    db, ml = f"sqlite:///{tmp_path / 'r.db'}", f"sqlite:///{tmp_path / 'ml.db'}"
    env = {**os.environ, "CLIPSCALE_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "scaling.cli",
        "ingest",
        "sweep=toy",
        *overrides,
        "--db",
        db,
        "--tracking-uri",
        ml,
    ]
    for _ in range(2):  # the second time changes nothing
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "2 points, 1 outcomes ingested" in out.stdout
    frame = runs(db, "sweep=toy").set_index("id")
    assert sorted(frame["status"]) == ["planned", "succeeded"]
    row = frame.loc[done.id]
    assert row["toy_shapes/acc1"] == 0.31
    assert row["compute_gmacs"] == planned.points[0].macs.total * done.samples_seen

    from mlflow.tracking import MlflowClient

    client = MlflowClient(ml)
    experiment = client.get_experiment_by_name("clipscale/toy")
    logged = client.search_runs([experiment.experiment_id])
    kinds = sorted(r.data.tags.get("clipscale.kind") for r in logged)
    assert kinds == ["point", "sweep"]
    point_run = next(r for r in logged if r.data.tags.get("clipscale.kind") == "point")
    parent = next(r for r in logged if r.data.tags.get("clipscale.kind") == "sweep")
    assert point_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert point_run.data.metrics["toy_shapes/acc1"] == 0.31


def test_ingest_without_tracking_writes_no_mlflow_store(tmp_path: Path) -> None:
    overrides = [*OVERRIDES, f"runs_root={tmp_path / 'runs'}"]
    env = {**os.environ, "CLIPSCALE_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "scaling.cli", "ingest", "sweep=toy", *overrides, "--no-tracking"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "results.db").is_file() and not (tmp_path / "mlflow.db").exists()
