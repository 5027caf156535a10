"""Results-store benchmark, with MLflow measured beside it on the same runs.

1. Ingest as `scaling status` does: N outcome.json files of a launched sweep (written by
   the product's own writers, ten metrics each) go through ``status._ingest`` (one
   ``ingest_runs`` transaction per poll) and ``update_attempts``, a poll's worth at a time
   (target: 100,000 in < 60 s), with a cProfile of where the time goes. Beside it, what
   status's default tracking hook (``tracking.log_run`` into MLflow) costs per run.
2. The bulk path: ``ingest_metrics`` of N × 10 metric rows (1M at 100k; target < 10 s).
3. Filtered queries over the N ingested runs (target < 50 ms) beside MLflow's
   ``MlflowClient.search_runs`` with the same filters on the same runs in MLflow's own
   SQLite store, and the pandas frames of both (``scaling.store.runs`` and
   ``mlflow.search_runs``). MLflow's store is filled in bulk through its ORM tables with
   exactly the rows ``tracking.log_run`` writes (checked row for row against runs it logged).

Setup (planning, writing the run directories, filling MLflow) is not timed. Writes
bench/results/store.json.

    python bench/store_bench.py [--runs 100000] [--poll 1000] [--repeats 10] [--track 20]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from figures import figure, machine
from sqlalchemy.engine import Engine

from scaling import tracking
from scaling.dispatch.follow import RunFiles, followed
from scaling.dispatch.status import _ingest
from scaling.outcome import Outcome, write_outcome
from scaling.plan import Plan, plan
from scaling.runspec import EVAL, TRAIN, run_dir
from scaling.store import PointRow, connect, ingest_metrics, record_points, runs
from scaling.store.attempts import (
    AttemptInfo,
    NewSubmission,
    add_submissions,
    attempts_of,
    locked,
    set_submission,
    update_attempts,
)
from scaling.store.db import read
from scaling.store.query import fetch, parse_filters
from scaling.sync import planned_rows
from scaling.train import _write_point

HERE = Path(__file__).resolve().parent
FAMILY = "store-bench"
INGEST_TARGET_S, BULK_TARGET_S, QUERY_TARGET_MS = 60.0, 10.0, 50.0
MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-g-14")
DATA = ("LAION-80M", "LAION-400M", "LAION-2B")
SAMPLES = ("2B", "3B", "5B", "8B", "13B", "20B", "34B", "50B")
LRS = ("1e-4", "2e-4", "3e-4", "4e-4", "5e-4", "6e-4", "8e-4", "1e-3", "2e-3", "3e-3")
# Ten metrics per run, as the paper's evaluation sets give them (the zero-shot sets, a linear
# probe, retrieval and the robustness average).
METRICS = (("imagenet1k", "acc1"), ("imagenet1k", "acc5"), ("imagenet1k", "mean_per_class_recall"),
           ("imagenet1k", "lp_acc1"), ("imagenetv2", "acc1"), ("imagenet_sketch", "acc1"),
           ("objectnet", "acc1"), ("mscoco_captions", "image_retrieval_recall@5"),
           ("mscoco_captions", "text_retrieval_recall@5"), ("imagenet_robustness", "acc1"))  # fmt: skip
VERSIONS = {"clipscale": "0.1.0", "open_clip_torch": "3.3.0", "torch": "2.14.1"}
PROFILED = 3  # runs logged by tracking.log_run under cProfile into the full experiment
ARRAY = 1000  # tasks per job array: Slurm's default MaxArraySize is 1001
START = datetime(2026, 1, 1, tzinfo=UTC)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# ---------------------------------------------------------------- a launched sweep on disk


def sweep(root: Path, n: int, rng: random.Random) -> Plan:
    """n points of a hyper-parameter sweep over the paper's grid (models × data × samples
    seen × lr × seeds), drawn evenly from the full product so every model is in it."""
    seeds = -(-n // (len(MODELS) * len(DATA) * len(SAMPLES) * len(LRS)))
    overrides = [f"name={FAMILY}", f"runs_root={root}", "include=[]", f"model=[{','.join(MODELS)}]",
                 f"data=[{','.join(DATA)}]", f"samples_seen=[{','.join(SAMPLES)}]", f"+lr=[{','.join(LRS)}]",
                 f"+seed=[{','.join(str(s) for s in range(seeds))}]"]  # fmt: skip
    full = plan("paper", overrides)
    keep = sorted(rng.sample(range(len(full.points)), n))
    return replace(full, points=tuple(full.points[i] for i in keep))


def launch_records(engine: Engine, p: Plan) -> dict[str, float]:
    """The store as a launch leaves it and the scheduler then moves it: the points recorded
    (``_reconcile``'s first step), one training and one evaluation array per 1,000 points,
    every training ended ``trained`` and every evaluation ``running``."""
    rows = planned_rows(p)
    _, record_s = timed(lambda: record_points(engine, FAMILY, rows, description="bench", new_only=True))
    ids = [q.point.id for q in p.points]
    batches: list[NewSubmission] = []
    for i in range(0, len(ids), ARRAY):
        train = NewSubmission(
            f"bench-train-{i}", "slurm", tuple(ids[i : i + ARRAY]), f"/jobs/t{i}", {}, TRAIN
        )
        batches += [train, replace(train, token=f"bench-eval-{i}", folder=f"/jobs/e{i}", stage=EVAL,
                                   after=train.token)]  # fmt: skip
    _, submit_s = timed(
        lambda: locked(engine, FAMILY, lambda conn: add_submissions(conn, FAMILY, batches, "b"))
    )
    for n, b in enumerate(batches):
        job = str(1000 + n)
        set_submission(engine, b.token, "submitted", job, lambda index, job=job: f"{job}_{index}")  # type: ignore[misc]
        set_submission(engine, b.token, "released")
    history = read(engine, lambda conn: attempts_of(conn, FAMILY))
    changes = [{"point_id": a.point_id, "key": a.key, "state": "trained" if a.stage == TRAIN else "running",
                "node": "node001", "started_at": START, "ended_at": START if a.stage == TRAIN else None}
               for h in history.values() for a in h]  # fmt: skip
    update_attempts(engine, changes)
    return {"record_points_s": round(record_s, 2), "add_submissions_s": round(submit_s, 2)}


def outcome_of(q: Any, rng: random.Random, i: int) -> Outcome:
    """What an evaluation job writes for a point: its counts, speed and ten metrics."""
    t = q.point.train
    started = START + timedelta(seconds=37 * i)
    values = {f"{d}/{m}": rng.random() for d, m in METRICS}
    metrics: dict[str, dict[str, float | None]] = {}
    for key, value in values.items():
        dataset, _, metric = key.partition("/")
        metrics.setdefault(dataset, {})[metric] = value
    return Outcome(
        id=q.point.id, status="succeeded", samples_seen=q.point.samples_seen,
        samples_seen_planned=q.point.samples_seen, epochs=t.epochs,
        wall_time_s=round(rng.uniform(300, 900), 3), train_time_s=round(rng.uniform(1e4, 1e6), 1),
        samples_per_s=round(rng.uniform(2e4, 9e4), 3), metrics=metrics, mfu=round(rng.uniform(0.3, 0.5), 4),
        ranks=t.gpus, checkpoint="checkpoints/epoch_latest.pt",
        loss={"first": 9.5, "last": round(rng.uniform(1, 3), 4), "min": 1.0, "logged": q.point.steps},
        started_at=started.isoformat(), finished_at=(started + timedelta(hours=20)).isoformat(),
        host=f"node{i % 512:03d}", versions=VERSIONS,
    )  # fmt: skip


def write_runs(p: Plan, rng: random.Random) -> list[Outcome]:
    """Each point's point.json (as training writes it) and outcome.json (as evaluation
    writes it), through the product's own writers."""
    out = []
    for i, q in enumerate(p.points):
        directory = run_dir(p.sweep.runs_root, q.point)
        directory.mkdir(parents=True)
        _write_point(directory, q.point)
        out.append(write_outcome(directory, outcome_of(q, rng, i)))
    return out


# ---------------------------------------------------------------- ingest as status does


def evaluations(engine: Engine) -> list[AttemptInfo]:
    history = read(engine, lambda conn: attempts_of(conn, FAMILY))
    return [a for h in history.values() for a in h if a.stage == EVAL]


def status_ingest(engine: Engine, p: Plan, poll: int) -> dict[str, Any]:
    """Every evaluation ends ``completed``; a poll's worth at a time, what ``_reconcile``
    then does: ``_ingest`` (one ``ingest_run`` per run; a poll's own ``RunFiles``, so each
    outcome.json is read once, as the poll's ``_ending`` would) and one ``update_attempts``."""
    by_id, followed_s = timed(lambda: followed(p, engine))
    ended = evaluations(engine)
    ingest_s = update_s = 0.0
    cpu = time.process_time()  # this process's CPU seconds: what a busy shared machine does not inflate
    per_poll = []  # ms per outcome: does a poll slow down as the store fills?
    for i in range(0, len(ended), poll):
        chunk = ended[i : i + poll]
        landed, seconds = timed(
            lambda chunk=chunk: _ingest(p, engine, by_id, [(a, "succeeded") for a in chunk], None, RunFiles())
        )
        if (count := len(landed)) != len(chunk):
            raise AssertionError(f"_ingest stored {count} of {len(chunk)} outcomes")
        changes = [{"point_id": a.point_id, "key": a.key, "state": "succeeded", "node": "node001",
                    "started_at": START, "ended_at": START, "exit_reason": None,
                    "log_path": f"/jobs/{a.submission}/{a.job_id}.out"} for a in chunk]  # fmt: skip
        _, updated = timed(lambda changes=changes: update_attempts(engine, changes))
        ingest_s, update_s = ingest_s + seconds, update_s + updated
        per_poll.append(round((seconds + updated) * 1000 / len(chunk), 2))
    cpu = time.process_time() - cpu
    check_ingested(engine, len(ended))
    return {"outcomes": len(ended), "poll": poll, "polls": -(-len(ended) // poll), "cpu_s": round(cpu, 2),
            "followed_s": round(followed_s, 2), "ingest_s": round(ingest_s, 2),
            "update_attempts_s": round(update_s, 2), "total_s": round(ingest_s + update_s, 2),
            "ms_per_outcome": round((ingest_s + update_s) * 1000 / len(ended), 3),
            "ms_per_outcome_by_poll": per_poll}  # fmt: skip


def check_ingested(engine: Engine, n: int) -> None:
    """Every point succeeded with its ten metrics, or the timing above means nothing."""
    from scaling.store.models import Metric, Point

    def counts(conn: sa.Connection) -> tuple[int, int]:
        done = conn.execute(sa.select(sa.func.count()).where(Point.status == "succeeded")).scalar_one()
        return done, conn.execute(sa.select(sa.func.count()).select_from(Metric)).scalar_one()

    done, metrics = read(engine, counts)
    if (done, metrics) != (n, n * len(METRICS)):
        raise AssertionError(f"after ingest: {done} of {n} points succeeded, {metrics} metric rows")


def profile_ingest(engine: Engine, p: Plan, n: int, top: int) -> dict[str, Any]:
    """The first n outcomes ingested again under cProfile: the same statements (an outcome
    replaces the point's metrics as a whole), so the same split of time."""
    by_id = followed(p, engine)
    ended = [(a, "succeeded") for a in evaluations(engine)[:n]]
    stages = {"ingest_run": ("ingest.py", "ingest_run"), "outcome_rows (read outcome.json, point.json)":
              ("ingest.py", "outcome_rows"), "_family (upsert + select)": ("ingest.py", "_family"),
              "_points (upsert point + family_point)": ("ingest.py", "_points"),
              "upsert (all upserts)": ("ingest.py", "upsert"), "state.refresh": ("state.py", "refresh"),
              "upsert's stmt.excluded (column proxies)": ("dml.py", "excluded"),
              "SQLAlchemy cache keys": ("cache_key.py", "_generate_cache_key"),
              "sqlite3 execute": ("~", "<method 'execute' of 'sqlite3.Cursor' objects>"),
              "sqlite3 commit": ("~", "<method 'commit' of 'sqlite3.Connection' objects>")}  # fmt: skip
    return {
        "outcomes": n,
        **profiled(lambda: _ingest(p, engine, by_id, ended, None, RunFiles()), stages, top),
    }


def profiled(fn: Callable[[], Any], stages: dict[str, tuple[str, str]], top: int) -> dict[str, Any]:
    """fn under cProfile: each stage's cumulative seconds (stage: file suffix, function) and
    the top functions by cumulative and by own time."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof)
    raw = stats.stats  # type: ignore[attr-defined]
    cumulative = {label: round(max((v[3] for k, v in raw.items() if k[0].endswith(f) and k[2] == name),
                                   default=0), 3) for label, (f, name) in stages.items()}  # fmt: skip
    return {"total_s": round(stats.total_tt, 3),  # type: ignore[attr-defined]
            "stages_cumulative_s": cumulative, "top_by_cumulative": _top(prof, "cumulative", top),
            "top_by_tottime": _top(prof, "tottime", top)}  # fmt: skip


def _top(prof: cProfile.Profile, key: str, top: int) -> list[str]:
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats(key).print_stats(top)
    body = text.getvalue()
    return [line.rstrip() for line in body[body.find("ncalls") :].splitlines() if line.strip()]


def bulk_path(url: str, n: int) -> dict[str, Any]:
    """``ingest_metrics``: n × 10 metric rows in one transaction, on points recorded in bulk."""
    rng = random.Random(1)
    engine = connect(url)
    points = [PointRow(f"p{i:07d}", rng.choice(MODELS), rng.choice(DATA), rng.choice((3, 13, 34)) * 10**9,
                       rng.uniform(5, 300), "succeeded", "run", {}) for i in range(n)]  # fmt: skip
    _, points_s = timed(lambda: record_points(engine, "bulk", points))
    rows = ({"point_id": p.id, "dataset": d, "metric": m, "value": rng.random(), "reason": None}
            for p in points for d, m in METRICS)  # fmt: skip
    count, seconds = timed(lambda: ingest_metrics(engine, rows))
    engine.dispose()
    return {"points": n, "metric_rows": count, "record_points_s": round(points_s, 2),
            "ingest_metrics_s": round(seconds, 2), "rows_per_s": round(count / seconds)}  # fmt: skip


# ---------------------------------------------------------------- MLflow's store, filled


@dataclass(frozen=True)
class Template:
    """What every point's MLflow run shares, read from a run ``tracking.log_run`` made."""

    run: dict[str, Any]  # the runs row, less what is the run's own
    artifact_root: str  # the runs' artifact_uri is this + /<run id>/artifacts
    tags: dict[str, str]  # tags every point's run carries with the same value (its parent's id …)


def mlflow_rows(
    run_id: str, point: dict[str, Any], outcome: Outcome, t: Template
) -> dict[str, list[dict[str, Any]]]:
    """The rows of MLflow's tables for one point's run, as ``tracking.log_run`` writes them
    (its parameters, metrics and tags through clipscale's own mapping)."""
    start, end = tracking._ms(outcome.started_at), tracking._ms(outcome.finished_at)
    run = {**t.run, "run_uuid": run_id, "name": outcome.id, "start_time": start, "end_time": end,
           "artifact_uri": f"{t.artifact_root}/{run_id}/artifacts"}  # fmt: skip
    tags = {**t.tags, tracking.KIND_TAG: "point", tracking.POINT_TAG: outcome.id,
            "mlflow.runName": outcome.id, tracking.MODEL_TAG: str(point["model"]),
            tracking.DATA_TAG: str(point["data"]), tracking.SWEEP_TAG: str(point["sweep"]),
            tracking.STATUS_TAG: outcome.status}  # fmt: skip
    metrics = [{"key": k, "value": v, "timestamp": end, "step": step, "is_nan": False, "run_uuid": run_id}
               for k, v, step in tracking.run_metrics(outcome)]  # fmt: skip
    # MLflow's latest value of a metric is its highest step's (then its latest timestamp's).
    latest = {m["key"]: m for m in sorted(metrics, key=lambda m: (m["step"], m["timestamp"]))}
    return {
        "runs": [run],
        "tags": [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()],
        "params": [{"key": k, "value": v, "run_uuid": run_id} for k, v in tracking.run_params(point).items()],
        "metrics": metrics,
        "latest_metrics": list(latest.values()),
    }  # fmt: skip


def template(engine: Engine, run_id: str) -> Template:
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

    with engine.connect() as conn:
        run = dict(conn.execute(sa.select(SqlRun.__table__).where(SqlRun.run_uuid == run_id)).one()._mapping)
        rows = conn.execute(sa.select(SqlTag.key, SqlTag.value).where(SqlTag.run_uuid == run_id))
        tags: dict[str, str] = {k: v for k, v in rows}
    own = {"run_uuid", "name", "start_time", "end_time", "artifact_uri"}
    root = run["artifact_uri"].removesuffix(f"/{run_id}/artifacts")
    per_run = {
        tracking.POINT_TAG,
        "mlflow.runName",
        tracking.MODEL_TAG,
        tracking.DATA_TAG,
        tracking.STATUS_TAG,
    }
    return Template({k: v for k, v in run.items() if k not in own}, root,
                    {k: v for k, v in tags.items() if k not in per_run})  # fmt: skip


def stored_rows(engine: Engine, run_id: str) -> dict[str, list[dict[str, Any]]]:
    from mlflow.store.tracking.dbmodels import models as m

    tables = {"runs": m.SqlRun, "tags": m.SqlTag, "params": m.SqlParam, "metrics": m.SqlMetric,
              "latest_metrics": m.SqlLatestMetric}  # fmt: skip
    with engine.connect() as conn:
        return {
            name: [
                dict(r._mapping)
                for r in conn.execute(sa.select(model.__table__).where(model.run_uuid == run_id))
            ]
            for name, model in tables.items()
        }


def same_rows(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> bool:
    def key(rows: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)

    return all(key(a[t]) == key(b[t]) for t in a) and a.keys() == b.keys()


def fill_mlflow(uri: str, p: Plan, outcomes: Sequence[Outcome], track: int, top: int) -> dict[str, Any]:
    """MLflow's store holding every point's run: the first and last ``track`` logged by
    ``tracking.log_run`` (status's hook; timed: first into an empty experiment, last into a
    full one; then PROFILED more under cProfile), the rest inserted in bulk through MLflow's
    ORM tables with the rows log_run writes. Fails unless the bulk rows of the first runs
    equal what log_run stored."""
    from mlflow.store.tracking.dbmodels import models as m

    dirs = [run_dir(p.sweep.runs_root, q.point) for q in p.points]
    tracking.sweep_run(FAMILY, uri, "bench")  # what `scaling status` does first (cli._tracker)
    first, first_s = timed(lambda: [tracking.log_run(d, uri, FAMILY) for d in dirs[:track]])
    engine = sa.create_engine(uri)
    points = [json.loads(json.dumps(asdict(q.point), sort_keys=True)) for q in p.points]
    t = template(engine, first[0])
    for i, run_id in enumerate(first):
        expected = mlflow_rows(run_id, points[i], outcomes[i], t)
        if not same_rows(stored_rows(engine, run_id), expected):
            raise AssertionError(f"bulk rows for {outcomes[i].id} differ from what tracking.log_run stored")
    tables = [("runs", m.SqlRun), ("tags", m.SqlTag), ("params", m.SqlParam), ("metrics", m.SqlMetric),
              ("latest_metrics", m.SqlLatestMetric)]  # fmt: skip
    counts = dict.fromkeys((name for name, _ in tables), 0)
    start = time.perf_counter()
    end = len(points) - track - PROFILED
    for lo in range(track, end, 5000):
        hi = min(lo + 5000, end)
        batch: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in tables}
        for i in range(lo, hi):
            for name, rows in mlflow_rows(uuid.uuid4().hex, points[i], outcomes[i], t).items():
                batch[name] += rows
        with engine.begin() as conn:
            for name, model in tables:
                conn.execute(sa.insert(model.__table__), batch[name])
                counts[name] += len(batch[name])
    bulk_s = time.perf_counter() - start
    engine.dispose()
    last, last_s = timed(lambda: [tracking.log_run(d, uri, FAMILY) for d in dirs[end : end + track]])
    stages = {"log_run": ("tracking.py", "log_run"), "_find (search_runs by tag)": ("tracking.py", "_find"),
              "_sweep_run (the parent, found by tag)": ("tracking.py", "_sweep_run"),
              "_create (create_run)": ("tracking.py", "_create"),
              "_record (log_batch, log_text, log_artifact)": ("tracking.py", "_record"),
              "_finish (set_tag, set_terminated)": ("tracking.py", "_finish")}  # fmt: skip
    prof = profiled(lambda: [tracking.log_run(d, uri, FAMILY) for d in dirs[end + track :]], stages, top)
    return {"uri": "sqlite:///…/mlflow.db", "runs": len(points), "log_run_timed": track,
            "logged_by_log_run": len(first) + len(last) + PROFILED, "bulk_rows": counts,
            "bulk_insert_s": round(bulk_s, 1),
            "log_run_ms_first": round(first_s * 1000 / track, 1),
            "log_run_ms_full": round(last_s * 1000 / track, 1),
            "rows_checked_against_log_run": len(first),
            "log_run_profile": {"runs": PROFILED, "note": "the last runs, logged under cProfile"}
            | prof}  # fmt: skip


# ---------------------------------------------------------------- queries, side by side


def queries(p: Plan, rng: random.Random) -> dict[str, tuple[list[str], str]]:
    """Each filter as `scaling runs` takes it and as MLflow's filter string (params are the
    resolved point, metrics ``dataset/metric`` and ``samples_seen``, the point id a tag)."""
    pid = p.points[rng.randrange(len(p.points))].point.id
    metric = "metrics.`imagenet1k/acc1`"
    return {
        "model+samples+metric": (
            ["model=ViT-L-14", "samples_seen>=34B", "imagenet1k/acc1>0.999"],
            f"params.model = 'ViT-L-14' AND metrics.samples_seen >= 34000000000 AND {metric} > 0.999",
        ),
        "one point by id": ([f"id={pid}"], f"tags.`{tracking.POINT_TAG}` = '{pid}'"),
        "metric threshold only": (["imagenet1k/acc1>0.9995"], f"{metric} > 0.9995"),
    }  # fmt: skip


CHECK = (
    ["model=ViT-L-14", "imagenet1k/acc1>0.99"],
    "params.model = 'ViT-L-14' AND metrics.`imagenet1k/acc1` > 0.99",
)


def median_ms(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """One warm-up (as a running session would have), then the median of ``repeats``."""
    out = fn()
    samples = []
    for _ in range(repeats):
        out, seconds = timed(fn)
        samples.append(seconds)
    return out, round(statistics.median(samples) * 1000, 2)


def agree(
    name: str, ours: tuple[list[dict[str, Any]], list[tuple[str, str, str, Any]]], theirs: list[Any]
) -> None:
    """The same points, with the same model, samples seen and top-1, or the comparison is void."""
    mine = {r["id"]: r for r in ours[0]}
    top1 = {pid: v for pid, d, m, v in ours[1] if (d, m) == ("imagenet1k", "acc1")}
    peer = {r.data.tags[tracking.POINT_TAG]: r for r in theirs}
    if len(ours[0]) != len(theirs) or mine.keys() != peer.keys():
        raise AssertionError(f"{name}: clipscale returned {len(ours[0])} runs, MLflow {len(theirs)}")
    for pid, run in peer.items():
        seen = (
            run.data.params["model"],
            run.data.metrics["samples_seen"],
            run.data.metrics["imagenet1k/acc1"],
        )
        if seen != (mine[pid]["model"], mine[pid]["samples_seen"], top1[pid]):
            raise AssertionError(f"{name}: {pid} differs between clipscale and MLflow: {seen}")


def compare_queries(url: str, uri: str, p: Plan, repeats: int, rng: random.Random) -> dict[str, Any]:
    import mlflow
    import pandas  # noqa: F401  (imported here so no timing pays for it)
    from mlflow.store.tracking import SEARCH_MAX_RESULTS_THRESHOLD
    from mlflow.tracking import MlflowClient

    engine = connect(url)
    client = MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT_PREFIX + FAMILY).experiment_id  # type: ignore[union-attr]

    def search(text: str) -> list[Any]:
        return client.search_runs([experiment], text, max_results=SEARCH_MAX_RESULTS_THRESHOLD)

    agree("check", fetch(engine, parse_filters(CHECK[0])), search(CHECK[1]))
    out: dict[str, Any] = {"check": {"filters": CHECK[0], "rows": len(search(CHECK[1]))}}
    for name, (filters, text) in queries(p, rng).items():
        parsed = parse_filters(filters)
        (found, metrics), sql_ms = median_ms(lambda parsed=parsed: fetch(engine, parsed), repeats)
        theirs, search_ms = median_ms(lambda text=text: search(text), repeats)
        agree(name, (found, metrics), theirs)
        frame, frame_ms = median_ms(lambda filters=filters: runs(url, *filters, engine=engine), repeats)
        peer_frame, peer_frame_ms = median_ms(
            lambda text=text: mlflow.search_runs(
                [experiment], text, max_results=SEARCH_MAX_RESULTS_THRESHOLD
            ),
            repeats,
        )
        if len(frame) != len(peer_frame):
            raise AssertionError(f"{name}: frames of {len(frame)} and {len(peer_frame)} rows")
        out[name] = {"filters": filters, "mlflow_filter": text, "rows": len(found),
                     "mlflow_rows": len(theirs),
                     "sql_median_ms": sql_ms, "mlflow_search_runs_median_ms": search_ms,
                     "dataframe_median_ms": frame_ms, "mlflow_dataframe_median_ms": peer_frame_ms,
                     "columns": len(frame.columns), "mlflow_columns": len(peer_frame.columns)}  # fmt: skip
        print(f"{name}: {len(found)} rows; clipscale {sql_ms} ms (frame {frame_ms}), "
              f"MLflow {search_ms} ms (frame {peer_frame_ms})")  # fmt: skip
    engine.dispose()
    return out


# ---------------------------------------------------------------- the figures


BEFORE = {
    "commit": "b8dcb37",
    "outcomes": 100_000,
    "status_ingest_s": 384.5,
    "measured": "bench/store_bench.py at b8dcb37 on this 2-core machine, 2026-12-07 (load 2-7)",
}


def rows_of(ingest: dict[str, Any], bulk: dict[str, Any], mlf: dict[str, Any], q: dict[str, Any],
            version: str, before: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    n = ingest["outcomes"]
    was = (before or {}).get("status_ingest_s") if (before or {}).get("outcomes") == n else None
    out = [
        figure(f"status ingest of {n:,} outcomes (launch._ingest + update_attempts)", ingest["total_s"], "s",
               target=f"< {INGEST_TARGET_S:g} s", met=ingest["total_s"] < INGEST_TARGET_S, before=was,
               note=f"wall clock; store.ingest_runs: one transaction per poll, {ingest['poll']} per poll; "
                    f"_ingest {ingest['ingest_s']} s + update_attempts {ingest['update_attempts_s']} s; "
                    f"{ingest['cpu_s']} s of this process's CPU time"),
        figure("status ingest per outcome", ingest["ms_per_outcome"], "ms",
               peer=f"MLflow {version} via tracking.log_run (status's default track hook)",
               peer_value=mlf["log_run_ms_full"],
               note=f"MLflow: {mlf['log_run_timed']} outcomes logged into an experiment of ~"
                    f"{mlf['runs']:,} runs ({mlf['log_run_ms_first']} ms each into an empty one); status "
                    "calls it after each ingest_run unless --no-tracking"),
        figure(f"bulk path: ingest_metrics of {bulk['metric_rows']:,} metric rows", bulk["ingest_metrics_s"],
               "s",
               target=f"< {BULK_TARGET_S:g} s", met=bulk["ingest_metrics_s"] < BULK_TARGET_S,
               note="one transaction, executemany; no command uses it for outcomes"),
    ]  # fmt: skip
    for name in ("model+samples+metric", "one point by id", "metric threshold only"):
        r = q[name]
        rows = f"rows returned: clipscale {r['rows']}, MLflow {r['mlflow_rows']}"
        out.append(figure(f"filtered query at {n:,} runs: {name}", r["sql_median_ms"], "ms",
                          target=f"< {QUERY_TARGET_MS:g} ms", met=r["sql_median_ms"] < QUERY_TARGET_MS,
                          peer=f"MLflow {version} search_runs", peer_value=r["mlflow_search_runs_median_ms"],
                          note=f"{rows}; query.fetch vs MlflowClient.search_runs, median of "
                               "repeats"))  # fmt: skip
        out.append(figure(f"pandas frame at {n:,} runs: {name}", r["dataframe_median_ms"], "ms",
                          peer=f"MLflow {version} search_runs", peer_value=r["mlflow_dataframe_median_ms"],
                          note=f"{rows}; scaling.store.runs vs mlflow.search_runs DataFrame"))  # fmt: skip
    return out


def bench(n: int, poll: int, repeats: int, track: int, profile_n: int, top: int) -> dict[str, Any]:
    import mlflow

    rng = random.Random(0)
    load = [round(x, 2) for x in os.getloadavg()]  # other work on a shared machine slows every figure
    # Run directories in memory where there is /dev/shm: 200k fsynced files take a shared disk
    # tens of minutes to write, and the ingest reads them from the page cache either way.
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as files,
    ):
        url, uri = f"sqlite:///{tmp}/results.db", f"sqlite:///{tmp}/mlflow.db"
        p, plan_s = timed(lambda: sweep(Path(files) / "runs", n, rng))
        engine = connect(url)
        launched = launch_records(engine, p)
        outcomes, write_s = timed(lambda: write_runs(p, rng))
        print(f"setup: {n} points planned in {plan_s:.1f} s, launched {launched}, run files {write_s:.1f} s")
        ingest = status_ingest(engine, p, poll)
        print(f"status ingest: {ingest}")
        prof = profile_ingest(engine, p, min(profile_n, n), top)
        print(f"profiled ingest of {prof['outcomes']}: {prof['stages_cumulative_s']}")
        engine.dispose()
        bulk = bulk_path(f"sqlite:///{tmp}/bulk.db", n)
        print(f"bulk path: {bulk}")
        mlf = fill_mlflow(uri, p, outcomes, min(track, n // 4), top)
        print(f"MLflow store: { {k: v for k, v in mlf.items() if k != 'log_run_profile'} }")
        print(f"profiled log_run: {mlf['log_run_profile']['stages_cumulative_s']}")
        q = compare_queries(url, uri, p, repeats, rng)
    setup = {"plan_s": round(plan_s, 1), "write_run_files_s": round(write_s, 1), **launched,
             "run_files": "/dev/shm (tmpfs)" if files.startswith(str(shm)) else "temporary directory on disk",
             "stores": "SQLite files in a temporary directory on disk"}  # fmt: skip
    load += [round(x, 2) for x in os.getloadavg()]
    return {"machine": machine(), "load_average_1_5_15min_start_end": load,
            "figures": rows_of(ingest, bulk, mlf, q, mlflow.__version__, BEFORE), "runs": n,
            "metrics_per_run": len(METRICS), "store": "SQLite (WAL) in a temporary directory", "setup": setup,
            "status_ingest": ingest, "ingest_profile": prof, "bulk_path": bulk, "mlflow": mlf, "queries": q,
            "mlflow_version": mlflow.__version__,
            "notes": ["outcomes carry no per-epoch loss curve (loss.epoch_mean): it adds only MLflow metric "
                      "history rows, which neither search reads",
                      "MLflow runs filled in bulk have no artifacts (outcome.json, point.json): search reads "
                      "none",
                      "MLflow telemetry: MLFLOW_DISABLE_TELEMETRY="
                      f"{os.environ.get('MLFLOW_DISABLE_TELEMETRY')}"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--poll", type=int, default=1000, help="outcomes ingested per status poll")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats of each query")
    parser.add_argument(
        "--track", type=int, default=20, help="runs logged by tracking.log_run, first and last"
    )
    parser.add_argument("--profile", type=int, default=2000, help="outcomes ingested again under cProfile")
    parser.add_argument("--top", type=int, default=25, help="functions listed in the profile")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "store.json")
    args = parser.parse_args()
    # MLflow 3 fetches a telemetry config and posts usage records from a background thread:
    # nothing may go over the network at run time, nor into the timings.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    result = bench(args.runs, args.poll, args.repeats, args.track, args.profile, args.top)
    # Measured once on the commit before status ingested a poll in one transaction (one
    # ingest_run transaction per outcome), same machine, same day: kept with its provenance.
    result["before"] = BEFORE
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["figures"], indent=2))


if __name__ == "__main__":
    main()
