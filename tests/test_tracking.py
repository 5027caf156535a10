"""MLflow tracking of run directories, against a real SQLite tracking store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from scaling.errors import ClipscaleError
from scaling.outcome import Outcome, write_outcome
from scaling.tracking import (
    DEFAULT_TRACKING_URI,
    MAX_PARAM_CHARS,
    log_run,
    metric_key,
    sweep_run,
    tracking_uri,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# MLflow 3.17's SQL store uses an SQLAlchemy loader that SQLAlchemy 2.1 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

METRICS: dict[str, dict[str, float | None]] = {
    "toy_shapes": {"acc1": 0.3, "acc5": 0.8},
    "toy_captions": {"image_retrieval_recall@5": 0.2},
    "x": {"acc5": None},
}


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One store for the module: creating it runs MLflow's migrations, which take seconds.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient  # imported here: collecting other tests stays fast

    return MlflowClient(tracking_uri=uri)


def make_run(root: Path, sweep: str, status: str = "succeeded", **point: Any) -> Path:
    """A run directory as ``scaling.train`` leaves it: point.json, outcome.json, a plot."""
    fields: dict[str, Any] = {
        "id": f"toy-s_toy-4k_4k_{sweep}",
        "sweep": sweep,
        "model": "toy-s",
        "data": "toy-4k",
        "stage": 1,
        "parent": None,
        "samples_seen_target": 4000,
        "samples_seen": 4096,
        "samples_per_epoch": 2048,
        "steps": 32,
        "train": {
            "lr": 0.001,
            "batch_size": 64,
            "gpus": 1,
            "epochs": 2,
            "extra_args": ["--grad-clip-norm", "1"],
        },
        "model_config": {"embed_dim": 32, "vision_cfg": {"layers": 2, "width": 64}},
        "data_size": 4096,
        "shards": "/data/toy/{00000..00003}.tar",
        **point,
    }
    run_dir = root / fields["id"]
    run_dir.mkdir(parents=True)
    (run_dir / "point.json").write_text(json.dumps(fields))
    (run_dir / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (run_dir / "out.log").write_text("not an artifact\n")
    write_outcome(run_dir, outcome(fields["id"], status))
    return run_dir


def outcome(point_id: str, status: str) -> Outcome:
    return Outcome(
        id=point_id,
        status=status,
        samples_seen=4096 if status == "succeeded" else None,
        samples_seen_planned=4096,
        epochs=2,
        wall_time_s=12.5,
        train_time_s=10.0 if status == "succeeded" else None,
        samples_per_s=409.6 if status == "succeeded" else None,
        metrics=METRICS if status == "succeeded" else {},
        loss={"first": 4.2, "last": 3.1, "epoch_mean": [4.0, 3.3]},
        error=None if status == "succeeded" else "RuntimeError: CUDA out of memory",
        started_at="2026-01-02T03:04:05+00:00",
        finished_at="2026-01-02T03:05:05+00:00",
    )


def point_runs(client: MlflowClient, sweep: str, point_id: str) -> list[Any]:
    experiment = client.get_experiment_by_name(f"clipscale/{sweep}")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], f"tags.`clipscale.point_id` = '{point_id}'")


def test_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None) == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert tracking_uri(None) == "http://tracker:5000"
    assert tracking_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_metric_key() -> None:
    assert (
        metric_key("toy_captions", "image_retrieval_recall@5") == "toy_captions/image_retrieval_recall_at_5"
    )
    assert metric_key("wds/imagenet1k", "acc:1") == "wds_imagenet1k/acc_1"


def test_log_run_records_the_point(tmp_path: Path, uri: str, client: MlflowClient) -> None:
    run_dir = make_run(tmp_path, "record", shards="s" * (MAX_PARAM_CHARS + 100))
    run_id = log_run(run_dir, uri, sweep="record")
    run = client.get_run(run_id)

    assert run.info.run_name == run_dir.name
    assert run.info.status == "FINISHED"
    assert run.info.start_time == int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp() * 1000)
    assert run.data.tags["mlflow.parentRunId"] == sweep_run("record", uri)
    assert {k: v for k, v in run.data.tags.items() if k.startswith("clipscale.")} == {
        "clipscale.kind": "point",
        "clipscale.point_id": run_dir.name,
        "clipscale.status": "succeeded",
        "clipscale.model": "toy-s",
        "clipscale.data": "toy-4k",
        "clipscale.sweep": "record",
    }
    p = run.data.params
    assert (p["train.lr"], p["train.batch_size"], p["samples_seen"]) == ("0.001", "64", "4096")
    assert p["parent"] == "null" and p["train.extra_args"] == '["--grad-clip-norm", "1"]'
    assert len(p["shards"]) == MAX_PARAM_CHARS and p["shards"].endswith("...[truncated]")
    assert not any(k.startswith("model_config") for k in p)
    assert run.data.metrics == {
        "toy_shapes/acc1": 0.3,
        "toy_shapes/acc5": 0.8,
        "toy_captions/image_retrieval_recall_at_5": 0.2,
        "samples_seen": 4096,
        "train_time_s": 10.0,
        "samples_per_s": 409.6,
        "wall_time_s": 12.5,
        "train/loss_epoch_mean": 3.3,
    }
    curve = client.get_metric_history(run_id, "train/loss_epoch_mean")
    assert [(m.step, m.value) for m in curve] == [(0, 4.0), (1, 3.3)]

    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts == {"outcome.json", "point.json", "model_config.json", "loss.png"}
    config = json.loads(
        Path(client.download_artifacts(run_id, "model_config.json", str(tmp_path))).read_text()
    )
    assert config["vision_cfg"] == {"layers": 2, "width": 64}
    # Artifacts live beside the database, not in ./mlruns of the working directory.
    assert run.info.artifact_uri.startswith(Path(uri.removeprefix("sqlite:///")).parent.as_uri())


def test_log_run_twice_gives_one_run(tmp_path: Path, uri: str, client: MlflowClient) -> None:
    run_dir = make_run(tmp_path, "twice")
    first = log_run(run_dir, uri, sweep="twice")
    assert log_run(run_dir, uri, sweep="twice") == first
    assert [r.info.run_id for r in point_runs(client, "twice", run_dir.name)] == [first]
    assert len(client.get_metric_history(first, "train/loss_epoch_mean")) == 2  # nothing logged again


def test_new_outcome_updates_the_same_run(tmp_path: Path, uri: str, client: MlflowClient) -> None:
    run_dir = make_run(tmp_path, "rerun", status="failed")
    first = log_run(run_dir, uri, sweep="rerun")
    failed = client.get_run(first)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["clipscale.status"] == "failed"
    assert failed.data.tags["mlflow.note.content"] == "RuntimeError: CUDA out of memory"
    assert "toy_shapes/acc1" not in failed.data.metrics

    write_outcome(run_dir, outcome(run_dir.name, "succeeded"))
    assert log_run(run_dir, uri, sweep="rerun") == first
    run = client.get_run(first)
    assert run.info.status == "FINISHED"
    assert run.data.tags["clipscale.status"] == "succeeded"
    assert "mlflow.note.content" not in run.data.tags
    assert run.data.metrics["toy_shapes/acc1"] == 0.3
    assert len(point_runs(client, "rerun", run_dir.name)) == 1


def test_sweep_run_is_idempotent(uri: str, client: MlflowClient) -> None:
    run_id = sweep_run("idem", uri, description="toy models on toy data")
    assert sweep_run("idem", uri) == run_id
    run = client.get_run(run_id)
    assert run.info.run_name == "idem"
    assert run.data.tags["clipscale.kind"] == "sweep"
    assert run.data.tags["mlflow.note.content"] == "toy models on toy data"
    assert client.get_experiment(run.info.experiment_id).name == "clipscale/idem"
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_log_run_without_sweep_is_not_nested(tmp_path: Path, uri: str, client: MlflowClient) -> None:
    run_dir = make_run(tmp_path, "flat")
    run = client.get_run(log_run(run_dir, uri))
    assert client.get_experiment(run.info.experiment_id).name == "clipscale/flat"
    assert "mlflow.parentRunId" not in run.data.tags


def test_missing_files_are_named(tmp_path: Path, uri: str) -> None:
    run_dir = make_run(tmp_path, "missing")
    (run_dir / "outcome.json").unlink()
    with pytest.raises(ClipscaleError, match=r"outcome\.json not found"):
        log_run(run_dir, uri)
    with pytest.raises(ClipscaleError, match=r"point\.json not found"):
        log_run(tmp_path / "nowhere", uri)


@pytest.mark.parametrize(
    "bad",
    [
        "sqlite:///{tmp}/no-such-dir/x/y.db",  # MLflow itself would create the directories
        "sqlite:////nonexistent-dir/x/y.db",
        "sqlite:///{tmp}",  # a directory: MLflow would retry it for about 100 seconds
        "sqlite:///{tmp}/garbage.db",
        "bogus://tracker",
    ],
)
def test_bad_uri_is_one_line(tmp_path: Path, bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "garbage.db").write_text("not a database\n" * 10)
    run_dir = make_run(tmp_path / "runs", "bad")

    def no_retry(seconds: float) -> None:  # MLflow waits between the tries of a bad store
        raise AssertionError(f"retried a bad tracking URI (sleep {seconds} s)")

    monkeypatch.setattr(time, "sleep", no_retry)
    with pytest.raises(ClipscaleError) as caught:
        log_run(run_dir, bad.format(tmp=tmp_path))
    assert "\n" not in str(caught.value) and "retried" not in str(caught.value)
    assert not (tmp_path / "no-such-dir").exists()


def test_import_needs_no_mlflow() -> None:
    code = "import sys, scaling.tracking; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
