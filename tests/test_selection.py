"""Which runs a law stands on, read as columns: the runs and values a refit reads once for all
its groups and metrics are those each law's own query selects, whichever way the store is read,
on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaling.fit import laws, selection, study
from scaling.fit.selection import Run, Runs
from scaling.store import PointRow, connect, ingest_metrics, record_points
from scaling.store import query as store_query
from scaling.store.query import fetch, parse_filters

PAIRS = [("cifar10", "acc1"), ("stl10", "acc1"), ("food101", "acc1")]
DATA = ("LAION-400M", "LAION-2B", "YFCC-15M")


def fill(url: str, others: int) -> None:
    """Family "f" (succeeded, diverged, compute unknown, values missing here and there) beside
    ``others`` points of family "g" with the same metrics."""
    rng = np.random.default_rng(1)
    points, rows = [], []
    for i in range(60 + others):
        family = "f" if i < 60 else "g"
        status = "diverged" if i % 17 == 3 else "succeeded"
        samples = None if i % 23 == 5 else int(10 ** rng.uniform(6, 8))
        why = "imported without samples seen" if i % 29 == 7 else None
        gmacs = 2.0 + i % 3
        point = PointRow(f"{family}{i:03d}", f"m{i % 3}", DATA[i % 3], samples, gmacs, status, "run", {},
                         no_compute=why)  # fmt: skip
        points.append((family, point))
        for k, (d, m) in enumerate(PAIRS):
            if (i + k) % 11 != 0:  # some runs lack some metrics
                value = float(rng.uniform(0.1, 0.9))
                rows.append({"point_id": point.id, "dataset": d, "metric": m, "value": value, "reason": None})
    engine = connect(url)
    for family in ("f", "g"):
        record_points(engine, family, [p for f, p in points if f == family])
    ingest_metrics(engine, rows)
    engine.dispose()


@pytest.mark.parametrize("others", [0, 200])  # the pair's index range read whole, or probed
def test_a_refits_reads_are_each_laws_own_selection(url: str, others: int) -> None:
    fill(url, others)
    engine = connect(url)
    filters = ["family=f"]
    groups = selection.groups_of(engine, filters)
    assert set(groups) == {"LAION", "YFCC"}
    reads = selection.read_groups(engine, filters, groups, PAIRS)
    for name, group in groups.items():
        narrowed = [*filters, *group]
        for dataset, metric in PAIRS:
            got = selection.load(engine, narrowed, dataset, metric, need_compute=False, given=reads[name])
            alone = selection.load(engine, narrowed, dataset, metric, need_compute=False)
            assert [list(x) for x in got[0]] == [list(x) for x in alone[0]]
            assert got[1:] == alone[1:]
            # The oracle: each succeeded row of the group as the store's row query gives it.
            rows, metrics = fetch(
                engine, parse_filters([*narrowed, "status=succeeded"]), only=(dataset, metric)
            )
            value = {pid: v for pid, _, _, v in metrics}
            unknown = [
                r["samples_seen"] is None or (r["compute_gmacs"] is None and r["no_compute"]) for r in rows
            ]
            known = [r for r, out in zip(rows, unknown, strict=True) if not out]
            want = [Run(r["id"], r["model"], r["data"], r["samples_seen"], r["gmacs_per_sample"],
                        float(r["compute_gmacs"]), value[r["id"]], r["params"], r["data_size"])
                    for r in known if value.get(r["id"]) is not None]  # fmt: skip
            assert list(got[0]) == want
            assert got[1] == [r["id"] for r in rows if value.get(r["id"]) is None]
            excluded = {run for run, _ in got[3]}
            assert {r["id"] for r in rows if r not in known and value.get(r["id"]) is not None} < excluded
            diverged = fetch(engine, parse_filters([*narrowed, "status=diverged"]), metrics=False)[0]
            assert {r["id"] for r in diverged} == {run for run, why in got[3] if why.startswith("diverged")}
            assert diverged  # the data make some in every group
    engine.dispose()


def test_the_whole_range_is_read_only_where_the_selection_is_most_of_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    fill(url, 200)
    engine = connect(url)
    sql: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *_: object) -> None:
        sql.append(statement)

    from sqlalchemy import event

    event.listen(engine, "before_cursor_execute", seen)
    ids = [r["id"] for r in fetch(engine, parse_filters(["family=f", "status=succeeded"]), metrics=False)[0]]
    probed = store_query.metric_values(engine, parse_filters(["family=f", "status=succeeded"]), PAIRS, ids)
    assert any("metrics.point_id IN" in s for s in sql)
    sql.clear()
    monkeypatch.setattr(store_query, "WHOLE_RANGE", 100)  # the store counts as mostly this selection
    whole = store_query.metric_values(engine, parse_filters(["family=f", "status=succeeded"]), PAIRS, ids)
    assert not any("metrics.point_id IN" in s for s in sql)
    for pair in PAIRS:
        np.testing.assert_array_equal(probed[pair], whole[pair])
        assert np.isnan(probed[pair]).any() and not np.isnan(probed[pair]).all()
    engine.dispose()


def test_runs_as_columns_are_the_runs_as_tuples() -> None:
    rows = [Run("a", "m", "d", 10, 2.0, 20.0, 0.5, None, 7), Run("b", "n", "e", 30, None, 60.0, 0.25)]
    runs = Runs.of(rows)
    assert list(runs) == rows and runs[1] == rows[1] and runs[-1] == rows[1]
    assert list(runs[:1]) == rows[:1] and runs.ids == ["a", "b"] and len(runs) == 2
    assert type(runs[0].compute) is float and type(runs[0].samples_seen) is int
    np.testing.assert_array_equal(selection.errors_of("acc1", runs), [0.5, 0.75])
    np.testing.assert_array_equal(selection.compute_of(runs), [20.0, 60.0])
    with pytest.raises(ValueError):
        runs.columns["value"][0] = 1.0  # a law's runs do not change under it


def test_a_refit_of_groups_equals_a_fit_of_each(url: str) -> None:
    fill(url, 0)
    engine = connect(url)
    refits = study.refit(engine, "f", settings=laws.Settings(n_boot=50))
    assert refits and all(r.fitted is not None for r in refits)
    for r in refits:
        assert r.fitted is not None
        alone = laws.fit(engine, [*r.fitted.filters], r.dataset, r.metric, laws.Settings(n_boot=50))
        assert alone.law.params == r.fitted.law.params and alone.inputs == r.fitted.inputs
    engine.dispose()
