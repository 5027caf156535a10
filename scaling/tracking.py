"""MLflow tracking: one MLflow run per grid point, nested under one parent run per sweep.

Each sweep is the experiment ``clipscale/<sweep>``. Logging is idempotent: a point is
found again by its ``clipscale.point_id`` tag, so rerunning the logger never duplicates
a run. MLflow is imported inside the functions (the core imports without it), and only
``MlflowClient`` is used: the fluent API keeps an active run in process-global state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import unquote

from scaling.errors import ClipscaleError, first_line, redact, redact_in
from scaling.outcome import OUTCOME_FILE, POINT_FILE, Outcome, read_outcome

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT_PREFIX = "clipscale/"
ARTIFACT_DIR = "mlartifacts"  # beside a SQLite tracking database, as `mlflow server` names it

KIND_TAG = "clipscale.kind"
SWEEP_TAG = "clipscale.sweep"
POINT_TAG = "clipscale.point_id"
STATUS_TAG = "clipscale.status"
MODEL_TAG = "clipscale.model"
DATA_TAG = "clipscale.data"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # what the MLflow UI shows as a run's description

MAX_PARAM_CHARS = 6000  # MLflow rejects longer parameter values
TRUNCATED = "...[truncated]"
LOSS_METRIC = "train/loss_epoch_mean"
TIMING_METRICS = ("samples_seen", "train_time_s", "samples_per_s", "wall_time_s")
_RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "diverged": "FAILED"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")  # MLflow's allowed set, less what Windows or paths trip on


def tracking_uri(explicit: str | None) -> str:
    """The URI given, else ``$MLFLOW_TRACKING_URI``, else a SQLite file in the working directory."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sweep_run(sweep: str, uri: str, description: str = "") -> str:
    """The id of the sweep's parent run in experiment ``clipscale/<sweep>``, created once."""
    with _tracking(uri) as (client, uri):
        return _sweep_run(client, _experiment(client, uri, sweep), sweep, description)


def log_run(run_dir: Path, uri: str, sweep: str | None = None, parent: str | None = None) -> str:
    """Log a finished run directory as one MLflow run (found again, never duplicated); its id.
    ``parent``: the sweep's run, where the caller has it (a search less per run: at 100k runs,
    each search costs 0.15 s)."""
    point = _read_point(run_dir)
    outcome = _read_outcome(run_dir, str(point["id"]))
    with _tracking(uri) as (client, uri):
        experiment = _experiment(client, uri, sweep or str(point.get("sweep", "")))
        if parent is None and sweep:
            parent = _sweep_run(client, experiment, sweep, "")
        run = _find(client, experiment, POINT_TAG, outcome.id)
        if run is not None and not _stale(run, outcome, parent):
            return str(run.info.run_id)
        if run is None:
            run_id, logged = _create(client, experiment, point, outcome, parent), set()
        else:
            run_id, logged = _reopen(client, run, outcome, parent), set(run.data.params)
        _record(client, run_id, run_dir, point, outcome, logged)
        _finish(client, run_id, outcome)
        return run_id


# ---------------------------------------------------------------- reading the run directory


def _read_point(run_dir: Path) -> dict[str, Any]:
    path = run_dir / POINT_FILE
    try:
        point = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClipscaleError(f"{path} not found: not a run directory") from None
    except (OSError, ValueError) as e:
        raise ClipscaleError(f"{path} is not a readable point: {e}") from None
    if not isinstance(point, dict) or not point.get("id"):
        raise ClipscaleError(f"{path} is not a grid point (it has no id)")
    return point


def _read_outcome(run_dir: Path, point_id: str) -> Outcome:
    outcome = read_outcome(run_dir)
    if outcome is None:
        raise ClipscaleError(f"{run_dir / OUTCOME_FILE} not found: the run has not finished")
    if outcome.id != point_id:
        raise ClipscaleError(f"{run_dir / OUTCOME_FILE} belongs to run {outcome.id!r}, not {point_id!r}")
    return outcome


def run_params(point: Mapping[str, Any]) -> dict[str, str]:
    """The point's settings as MLflow parameters: dotted keys, string values of legal length."""
    out: dict[str, str] = {}
    for key, value in point.items():
        if key == "model_config":
            continue  # nested and open-ended: logged whole as model_config.json instead
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in run_params(value).items()})
        else:
            out[key] = _truncate(value if isinstance(value, str) else json.dumps(value))
    return out


def _truncate(text: str) -> str:
    if len(text) <= MAX_PARAM_CHARS:
        return text
    return text[: MAX_PARAM_CHARS - len(TRUNCATED)] + TRUNCATED


def metric_key(*parts: str) -> str:
    """A metric name MLflow accepts: ``recall@5`` becomes ``recall_at_5``, ``/`` only between parts."""
    return "/".join(_UNSAFE.sub("_", part.replace("@", "_at_")) for part in parts)


def run_metrics(outcome: Outcome) -> list[tuple[str, float, int]]:
    """Every finite number of the outcome as (name, value, step)."""
    out = [
        (metric_key(dataset, name), float(value), 0)
        for dataset, values in sorted(outcome.metrics.items())
        for name, value in sorted(values.items())
        if _finite(value)
    ]
    out += [(name, float(v), 0) for name in TIMING_METRICS if _finite(v := getattr(outcome, name))]
    epoch_means = outcome.loss.get("epoch_mean") or []
    out += [(LOSS_METRIC, float(v), epoch) for epoch, v in enumerate(epoch_means) if _finite(v)]
    return out


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ms(stamp: str) -> int | None:
    # MLflow times are epoch milliseconds; the outcome's are ISO 8601 (empty if unknown).
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000)
    except ValueError:
        return None


# ---------------------------------------------------------------- MLflow


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[tuple[MlflowClient, str]]:
    """A client for ``uri`` (made absolute), MLflow's INFO chatter muted, its failures one line."""
    uri = _absolute(uri)
    _check_sqlite(uri)
    # MLflow 3 sends usage records to a server of its own unless told not to: nothing leaves.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))  # e.g. "Creating initial tables"
    try:
        yield MlflowClient(tracking_uri=uri), uri
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError, OSError) as e:
        raise ClipscaleError(
            f"MLflow tracking at {redact(uri)} failed: {redact_in(_one_line(e), uri)}"
        ) from None
    finally:
        logger.setLevel(level)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def _absolute(uri: str) -> str:
    # A relative SQLite path would move with the working directory, and so would its artifacts.
    path = _sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    query = uri.partition("?")[2]
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


def _check_sqlite(uri: str) -> None:
    """Fail fast: MLflow would create missing directories (anywhere, as root) and retries
    a database it cannot open for about 100 seconds before giving up."""
    path = _sqlite_path(uri)
    if path is None:
        return
    if not path.parent.is_dir():
        raise ClipscaleError(f"MLflow tracking database {path}: directory {path.parent} does not exist")
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA schema_version")
    except sqlite3.Error as e:
        raise ClipscaleError(f"MLflow tracking database {path} cannot be used: {e}") from None


def _one_line(error: BaseException) -> str:
    line = first_line(error)
    return line if len(line) <= 300 else line[:297] + "..."


def _artifact_root(uri: str, sweep: str) -> str | None:
    # MLflow's default is ./mlruns of whatever directory the first logger ran in.
    path = _sqlite_path(uri)
    if path is None:
        return None  # a server or a database: its own artifact store decides
    return (path.parent / ARTIFACT_DIR / _UNSAFE.sub("_", sweep)).as_uri()


def _experiment(client: MlflowClient, uri: str, sweep: str) -> str:
    """The id of experiment ``clipscale/<sweep>``, created on first use."""
    from mlflow.exceptions import MlflowException

    if not sweep:
        raise ClipscaleError("MLflow tracking needs a sweep name (the point has none)")
    name = EXPERIMENT_PREFIX + sweep
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, _artifact_root(uri, sweep), tags={SWEEP_TAG: sweep}))
        except MlflowException:
            experiment = client.get_experiment_by_name(name)  # another process created it first
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise ClipscaleError(
            f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore)"
        )
    return str(experiment.experiment_id)


def _find(client: MlflowClient, experiment: str, key: str, value: str) -> Run | None:
    """The oldest active run of the experiment whose tag ``key`` is ``value``."""
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.`{key}` = {_literal(value)}",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def _literal(value: str) -> str:
    # MLflow's filter grammar has no escapes, only a choice of quote.
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ClipscaleError(f"{value!r} has both kinds of quote; MLflow cannot search for it")


def _sweep_run(client: MlflowClient, experiment: str, sweep: str, description: str) -> str:
    run = _find(client, experiment, KIND_TAG, "sweep")
    if run is not None:
        if description and run.data.tags.get(NOTE_TAG) != description:
            client.set_tag(run.info.run_id, NOTE_TAG, description)
        return str(run.info.run_id)
    tags = {KIND_TAG: "sweep", SWEEP_TAG: sweep}
    if description:
        tags[NOTE_TAG] = description
    run_id = str(client.create_run(experiment, run_name=sweep, tags=tags).info.run_id)
    # A grouping run only: left RUNNING, the UI would show the sweep as live forever.
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _create(
    client: MlflowClient, experiment: str, point: Mapping[str, Any], outcome: Outcome, parent: str | None
) -> str:
    # No status tag yet: it is set last, so a run whose logging broke off is completed next time.
    tags = {
        KIND_TAG: "point",
        POINT_TAG: outcome.id,
        MODEL_TAG: str(point.get("model", "")),
        DATA_TAG: str(point.get("data", "")),
        SWEEP_TAG: str(point.get("sweep", "")),
    }
    if parent is not None:
        tags[PARENT_TAG] = parent
    run = client.create_run(experiment, start_time=_ms(outcome.started_at), tags=tags, run_name=outcome.id)
    return str(run.info.run_id)


def _stale(run: Run, outcome: Outcome, parent: str | None) -> bool:
    tags = run.data.tags
    return tags.get(STATUS_TAG) != outcome.status or (parent is not None and tags.get(PARENT_TAG) != parent)


def _reopen(client: MlflowClient, run: Run, outcome: Outcome, parent: str | None) -> str:
    """Ready an existing run to take a newer outcome of its point."""
    run_id = str(run.info.run_id)
    if parent is not None and run.data.tags.get(PARENT_TAG) != parent:
        client.set_tag(run_id, PARENT_TAG, parent)
    if NOTE_TAG in run.data.tags and not outcome.error:
        client.delete_tag(run_id, NOTE_TAG)  # the last attempt's error no longer describes it
    return run_id


def _record(
    client: MlflowClient,
    run_id: str,
    run_dir: Path,
    point: Mapping[str, Any],
    outcome: Outcome,
    logged: set[str],
) -> None:
    """Parameters not yet logged, every metric, the artifacts."""
    from mlflow.entities import Metric, Param

    # MLflow parameters are immutable; a point's id pins them, bar machine paths like shards.
    new = [Param(k, v) for k, v in run_params(point).items() if k not in logged]
    stamp = _ms(outcome.finished_at) or int(datetime.now().timestamp() * 1000)
    values = [Metric(k, v, stamp, step) for k, v, step in run_metrics(outcome)]
    # Explicitly synchronous: $MLFLOW_ENABLE_ASYNC_LOGGING would otherwise make this a future.
    client.log_batch(run_id, metrics=values, params=new, synchronous=True)
    if point.get("model_config") is not None:
        text = json.dumps(point["model_config"], indent=2, sort_keys=True) + "\n"
        client.log_text(run_id, text, "model_config.json")
    for path in _artifacts(run_dir):
        client.log_artifact(run_id, str(path))


def _artifacts(run_dir: Path) -> list[Path]:
    plots = sorted(p for pattern in ("*.png", "*.svg") for p in run_dir.glob(pattern) if p.is_file())
    return [run_dir / OUTCOME_FILE, run_dir / POINT_FILE, *plots]


def _finish(client: MlflowClient, run_id: str, outcome: Outcome) -> None:
    if outcome.error:
        client.set_tag(run_id, NOTE_TAG, outcome.error)
    client.set_tag(run_id, STATUS_TAG, outcome.status)
    client.set_terminated(run_id, _RUN_STATUS.get(outcome.status, "FAILED"), _ms(outcome.finished_at))
