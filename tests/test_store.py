"""The results store against real SQLite and a real throwaway PostgreSQL server."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scaling.errors import ClipscaleError
from scaling.outcome import Outcome, write_outcome
from scaling.store import connect, import_table, ingest_run, runs
from scaling.store.models import Attempt, FamilyPoint, Metric, Point

REPO = Path(__file__).resolve().parents[1]


def make_run(root: Path, index: int, metrics: dict | None = None, status: str = "succeeded") -> Path:
    """A run directory as a compute node leaves it: point.json and outcome.json."""
    point_id = f"toy-m_toy-4k_{index}k_{index:012x}"
    directory = root / point_id
    directory.mkdir(parents=True)
    point = {"id": point_id, "sweep": "toy", "model": "toy-m", "data": "toy-4k", "samples_seen": 1000 * index,
             "train": {"lr": 0.003, "batch_size": 128}}  # fmt: skip
    (directory / "point.json").write_text(json.dumps(point))
    write_outcome(directory, Outcome(
        id=point_id, status=status, samples_seen=1000 * index, samples_seen_planned=1000 * index, epochs=1,
        wall_time_s=1.0, train_time_s=0.5, samples_per_s=2000.0,
        metrics=metrics if metrics is not None else {"toy_shapes": {"acc1": 0.1 * (index % 10), "acc5": 0.5}},
        started_at="2026-11-23T10:00:00+00:00", finished_at="2026-11-23T10:01:00+00:00", host="node1",
    ))  # fmt: skip
    return directory


def counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = {m.__tablename__: conn.execute(sa.select(sa.func.count()).select_from(m)).scalar_one()
               for m in (Point, FamilyPoint, Attempt, Metric)}  # fmt: skip
    engine.dispose()
    return out


def test_migration_from_an_empty_database(url: str) -> None:
    engine = connect(url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert {"families", "points", "family_points", "attempts", "metrics", "alembic_version"} <= tables
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0008"
    connect(url)  # a second open finds the schema current and changes nothing
    assert counts(url) == {"points": 0, "family_points": 0, "attempts": 0, "metrics": 0}


@contextlib.contextmanager
def old_store(path: Path, revision: str) -> Iterator[sa.Connection]:
    """A SQLite store migrated only to ``revision``, open in a transaction to add rows to."""
    from alembic import command
    from alembic.config import Config

    from scaling.store.db import MIGRATIONS

    engine = sa.create_engine(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        yield conn
    engine.dispose()


def test_points_recorded_before_trajectories_get_their_schedule(tmp_path: Path) -> None:
    # A store at schema 0004 (before points said how their axis was trained): upgrading
    # fills each point's schedule from its resolved config; none is a checkpoint.
    with old_store(tmp_path / "old.db", "0004") as conn:
        conn.execute(sa.text(
            "INSERT INTO points (id, model, data, samples_seen, status, source, config, updated_at) VALUES "
            "('a', 'toy-s', 'toy-4k', 4000, 'succeeded', 'run', :config, '2026-01-01 00:00:00'),"
            "('b', 'toy-s', 'toy-4k', 8000, 'succeeded', 'import', '{}', '2026-01-01 00:00:00')"
        ), {"config": json.dumps({"train": {"lr_scheduler": "cosine"}})})  # fmt: skip
    upgraded = connect(f"sqlite:///{tmp_path / 'old.db'}")
    with upgraded.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, schedule, trunk, from_checkpoint FROM points ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [("a", "cosine", None, 0), ("b", None, None, 0)]


def test_points_recorded_before_model_types_get_theirs_from_the_model_name(tmp_path: Path) -> None:
    # A store at schema 0007: its runs trained CLIP, except published checkpoints whose model
    # says CoCa or SigLIP; `model_type=` then selects them.
    with old_store(tmp_path / "old.db", "0007") as conn:
        for i, model in enumerate(("toy-s", "coca_ViT-B-32", "ViT-B-16-SigLIP")):
            conn.execute(sa.text(
                "INSERT INTO points (id, model, data, samples_seen, status, source, config, updated_at) "
                "VALUES (:id, :model, 'LAION-2B', 4000, 'succeeded', 'import', '{}', '2026-01-01 00:00:00')"
            ), {"id": f"p{i}", "model": model})  # fmt: skip
            conn.execute(sa.text(f"INSERT INTO family_points VALUES ('published', 'p{i}')"))
        conn.execute(
            sa.text("INSERT INTO families VALUES ('published', 'import', '', '2026-01-01 00:00:00')")
        )
    upgraded = connect(f"sqlite:///{tmp_path / 'old.db'}")
    with upgraded.connect() as conn:
        rows = conn.execute(sa.text("SELECT model, model_type FROM points ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [
        ("toy-s", "clip"),
        ("coca_ViT-B-32", "coca"),
        ("ViT-B-16-SigLIP", "siglip"),
    ]
    frame = runs(
        f"sqlite:///{tmp_path / 'old.db'}", "family=published", "model_type=[coca,siglip]", engine=upgraded
    )
    assert sorted(frame["model"]) == ["ViT-B-16-SigLIP", "coca_ViT-B-32"]


def test_round_trip_and_idempotent_reingest(url: str, tmp_path: Path) -> None:
    engine = connect(url)
    run = make_run(tmp_path / "runs", 4, {"toy_shapes": {"acc1": 0.25, "lp_acc1": 0.3}, "toy_captions":
                   {"image_retrieval_recall@5": 0.2}})  # fmt: skip
    ingest_run(engine, run, "toy", gmacs_per_sample=0.01)
    first = counts(url)
    frame = runs(url, "sweep=toy", engine=engine)
    ingest_run(engine, run, "toy", gmacs_per_sample=0.01)
    assert counts(url) == first == {"points": 1, "family_points": 1, "attempts": 1, "metrics": 3}
    assert runs(url, "sweep=toy", engine=engine).equals(frame)
    row = frame.iloc[0]
    assert (row["model"], row["data"], row["samples_seen"], row["status"]) == (
        "toy-m",
        "toy-4k",
        4000,
        "succeeded",
    )
    assert row["compute_gmacs"] == pytest.approx(40.0)
    assert row["toy_shapes/acc1"] == 0.25 and row["toy_captions/image_retrieval_recall@5"] == 0.2


def test_nan_metrics_are_missing_with_a_reason_never_zero(url: str, tmp_path: Path) -> None:
    engine = connect(url)
    run = make_run(tmp_path / "runs", 2)
    raw = json.loads((run / "outcome.json").read_text())
    (run / "outcome.json").write_text(
        json.dumps(raw).replace('"acc5": 0.5', '"acc5": NaN, "acc10": Infinity, "recall": null')
    )
    ingest_run(engine, run, "toy")
    with engine.connect() as conn:
        rows = {r.metric: (r.value, r.reason) for r in conn.execute(sa.select(Metric))}
    assert rows["acc5"][0] is None and "nan" in rows["acc5"][1]
    assert rows["acc10"][0] is None and "inf" in rows["acc10"][1]
    assert rows["recall"] == (None, f"missing in {run / 'outcome.json'}")
    assert rows["acc1"][0] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw.pop("status"), "not an outcome"),
        (lambda raw: raw.update(status="exploded"), "unknown status 'exploded'"),
        (
            lambda raw: raw.update(metrics={"toy_shapes": {"acc1": "high"}}),
            r"toy_shapes/acc1 is not a number",
        ),
        (lambda raw: raw.update(metrics=[1, 2]), "metrics must map"),
    ],
)
def test_bad_outcomes_are_refused_and_nothing_is_written(
    url: str, tmp_path: Path, damage, message: str
) -> None:  # type: ignore[no-untyped-def]
    engine = connect(url)
    run = make_run(tmp_path / "runs", 3)
    raw = json.loads((run / "outcome.json").read_text())
    damage(raw)
    (run / "outcome.json").write_text(json.dumps(raw))
    with pytest.raises(ClipscaleError, match=message) as info:
        ingest_run(engine, run, "toy")
    assert "\n" not in str(info.value)
    assert counts(url) == {"points": 0, "family_points": 0, "attempts": 0, "metrics": 0}


def test_paper_table_imports_as_32_runs(url: str, shared: Path) -> None:
    engine = connect(url)
    assert import_table(engine, shared / "zeroshot_results.csv", "paper") == 32
    first = counts(url)
    assert import_table(engine, shared / "zeroshot_results.csv", "paper") == 32
    assert counts(url) == first and first["points"] == 32
    frame = runs(url, "family=paper", engine=engine)
    assert len(frame) == 32
    assert sorted(frame["data"].value_counts().items()) == [
        ("CLIP-WIT", 3),
        ("LAION-2B", 11),
        ("LAION-400M", 9),
        ("LAION-80M", 9),
    ]
    assert frame["imagenet1k/acc1"].notna().all()
    h14 = frame[(frame["model"] == "ViT-H-14")].iloc[0]
    assert h14["imagenet1k/acc1"] == pytest.approx(0.7797, abs=1e-4)
    assert h14["compute_gmacs"] == pytest.approx(190.97 * h14["samples_seen"])
    best = runs(url, "family=paper", "imagenet1k/acc1>0.77", engine=engine)
    assert list(best["model"]) == ["ViT-H-14"]


def test_paper_law_and_its_history_on_both_backends(url: str, shared: Path) -> None:
    from scaling.fit import history, laws

    engine = connect(url)
    import_table(engine, shared / "zeroshot_results.csv", "paper")
    fitted = laws.fit(engine, ["family=paper", "data=[LAION-80M,LAION-400M,LAION-2B]"], "imagenet1k", "acc1")
    assert round(fitted.law.alpha, 4) == -0.1114
    assert history.record_fit(engine, fitted) and not history.record_fit(engine, fitted)
    (row,) = history.history(engine, "paper")
    assert row["alpha"] == pytest.approx(fitted.law.alpha) and row["n_runs"] == 29
    assert row["alpha_low"] == pytest.approx(fitted.law.alpha_ci[0])


def test_wrong_table_format_is_refused(url: str, tmp_path: Path) -> None:
    engine = connect(url)
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ClipscaleError, match=r"not a results table .* no column arch"):
        import_table(engine, bad, "paper")
    assert counts(url)["points"] == 0


def test_filters_are_bound_parameters(url: str, shared: Path) -> None:
    engine = connect(url)
    import_table(engine, shared / "zeroshot_results.csv", "paper")
    assert len(runs(url, "model=x' OR '1'='1", engine=engine)) == 0
    assert len(runs(url, "family=paper", "samples_seen>=30B", engine=engine)) == 10
    assert counts(url)["points"] == 32


def test_corrupt_and_foreign_databases_are_refused(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(os.urandom(4096))
    before = corrupt.read_bytes()
    with pytest.raises(ClipscaleError, match="not a usable clipscale database") as info:
        connect(f"sqlite:///{corrupt}")
    assert "\n" not in str(info.value) and corrupt.read_bytes() == before
    foreign = tmp_path / "foreign.db"
    engine = sa.create_engine(f"sqlite:///{foreign}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE invoices (id INTEGER)"))
    with pytest.raises(ClipscaleError, match=r"holds tables that are not clipscale's \(invoices\)"):
        connect(f"sqlite:///{foreign}")


def test_server_that_is_down_is_one_line() -> None:
    with pytest.raises(
        ClipscaleError, match=r"cannot use postgresql\+psycopg://u:\*\*\*@127.0.0.1:9/x"
    ) as info:
        connect("postgresql+psycopg://u:secret@127.0.0.1:9/x")
    assert "secret" not in str(info.value) and "\n" not in str(info.value)


def test_missing_folder_and_bad_url() -> None:
    with pytest.raises(ClipscaleError, match="folder /no/such/dir does not exist"):
        connect("sqlite:////no/such/dir/results.db")
    with pytest.raises(ClipscaleError, match="not a database URL"):
        connect("::nonsense::")


# ---------------------------------------------------------------- the commands


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "scaling.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_then_runs_as_csv_acceptance(tmp_path: Path, shared: Path) -> None:
    table = str(shared / "zeroshot_results.csv")
    assert cli(["import", table, "--family", "paper"], tmp_path).returncode == 0
    first = cli(["runs", "family=paper", "--format", "csv"], tmp_path)
    assert first.returncode == 0, first.stderr
    rows = list(csv.DictReader(io.StringIO(first.stdout)))
    assert len(rows) == 32
    for column in ("model", "data", "samples_seen", "compute_gmacs", "imagenet1k/acc1",
                   "mscoco_captions/image_retrieval_recall@5"):  # fmt: skip
        assert column in rows[0]
    assert {r["data"] for r in rows} == {"LAION-80M", "LAION-400M", "LAION-2B", "CLIP-WIT"}
    assert (tmp_path / "results.db").is_file()
    again = cli(["import", table, "--family", "paper"], tmp_path)
    assert (
        again.returncode == 0
        and cli(["runs", "family=paper", "--format", "csv"], tmp_path).stdout == first.stdout
    )


def test_runs_exports_json_and_parquet(tmp_path: Path, shared: Path) -> None:
    import pandas as pd

    cli(["import", str(shared / "zeroshot_results.csv"), "--family", "paper"], tmp_path)
    as_json = json.loads(cli(["runs", "family=paper", "--format", "json"], tmp_path).stdout)
    assert len(as_json) == 32
    assert cli(["runs", "family=paper", "--format", "parquet", "-o", "r.parquet"], tmp_path).returncode == 0
    frame = pd.read_parquet(tmp_path / "r.parquet")
    assert len(frame) == 32 and "imagenet1k/acc1" in frame.columns
    refused = cli(["runs", "--format", "parquet"], tmp_path)
    assert refused.returncode == 2 and "--output" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "missing.csv", "--family", "paper"], "cannot read missing.csv"),
        (["runs", "--db", "sqlite:///corrupt.db"], "not a usable clipscale database"),
        (["runs", "colour=red"], "unknown filter 'colour'"),
        (["runs", "samples_seen>lots"], "samples_seen must be a count"),
        (["runs", "--db", "postgresql+psycopg://u@127.0.0.1:9/x"], "cannot use postgresql"),
    ],
)
def test_store_commands_fail_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "corrupt.db").write_bytes(b"\x00garbage" * 512)
    out = cli(args, tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr


def test_bulk_metric_ingest_upserts(url: str, tmp_path: Path) -> None:
    from scaling.store import ingest_metrics

    engine = connect(url)
    ingest_run(engine, make_run(tmp_path / "runs", 5), "toy")
    point = "toy-m_toy-4k_5k_000000000005"
    rows = [
        {"point_id": point, "dataset": "bulk", "metric": f"m{i}", "value": i / 10, "reason": None}
        for i in range(3)
    ]
    assert ingest_metrics(engine, rows) == 3
    rows[0]["value"] = None
    rows[0]["reason"] = "recomputed"
    assert ingest_metrics(engine, rows) == 3
    assert counts(url)["metrics"] == 2 + 3
    frame = runs(url, "id=" + point, engine=engine)
    assert frame["bulk/m2"].iloc[0] == 0.2 and frame["bulk/m0"].isna().all()


def test_a_batch_of_outcomes_is_stored_whole_or_not_at_all(url: str, tmp_path: Path) -> None:
    from scaling.store import Ended, ingest_runs

    engine = connect(url)
    dirs = [make_run(tmp_path / "runs", i + 1) for i in range(5)]
    # A point twice in one batch (its training's and its evaluation's attempts ended in one
    # poll): stored once, with the one outcome on disk.
    ids = ingest_runs(engine, "toy", [Ended(d, 0.01) for d in [*dirs, dirs[0]]])
    assert ids[0] == ids[-1] and len(set(ids)) == 5
    assert counts(url) == {"points": 5, "family_points": 5, "attempts": 5, "metrics": 10}
    assert ingest_runs(engine, "toy", [Ended(d, 0.01) for d in dirs]) == ids[:5]  # idempotent
    assert counts(url) == {"points": 5, "family_points": 5, "attempts": 5, "metrics": 10}
    bad = make_run(tmp_path / "more", 9)
    (bad / "outcome.json").write_text("{")
    with pytest.raises(ClipscaleError):
        ingest_runs(engine, "toy", [Ended(make_run(tmp_path / "more", 8), 0.01), Ended(bad, 0.01)])
    assert counts(url)["points"] == 5  # the good run of the bad batch is not stored either
