"""Refit benchmark: every default law of a family of 100,000 succeeded runs, 10 metrics ×
3 data sources (target: < 2 s), through the path `scaling status` takes when points land
(`study.refit`: groups_of, metrics_of, read_groups, fit_each per metric, record_fits), with a
cProfile of where the time goes.

The store is SQLite in a temporary directory, filled with the product's own bulk writers
(record_points, ingest_metrics), as bench/store_bench.py does. Writes figures to
bench/results/refit.json.

    python bench/refit_bench.py [--points 100000] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
from figures import figure, machine
from sqlalchemy.engine import Engine

from scaling.fit import laws, study
from scaling.store import PointRow, connect, ingest_metrics, record_points
from scaling.store.query import fetch, parse_filters

HERE = Path(__file__).resolve().parent
FAMILY = "refit-bench"
TARGET_S = 2.0
LANDED = 100  # points a status poll stores into one group
# Measured by this bench at b44fb52, before the refit read each group once and drew its
# bootstrap sparsely (one fetch per law, every run drawn 1,000 times); 6.43 s at 28c1263, before
# a law's runs were columns and the family was read once for all its groups.
BEFORE_S = 77.35
# Three data sources as selection.source_of sees them (LAION-400M and LAION-2B are one source).
DATA = ("LAION-400M", "LAION-2B", "DataComp-1B", "YFCC-15M")
MODELS = {"ViT-B-32": 4.4, "ViT-B-16": 17.6, "ViT-L-14": 81.1, "ViT-H-14": 167.4, "ViT-g-14": 290.7}
# Ten primary metrics outside selection.HEADLINE: a family with a headline metric refits only the
# headline ones (five at most), so these are what makes a refit cover ten.
METRICS = [(d, "acc1") for d in ("cifar10", "cifar100", "imagenetv2", "imagenet_sketch", "imagenet-a",
                                 "imagenet-r", "objectnet", "food101", "sun397", "stl10")]  # fmt: skip


def fill(url: str, n_points: int) -> dict[str, float]:
    """100k succeeded runs, each with the ten metrics on an E = β·C^α law (runs above it)."""
    rng = np.random.default_rng(0)
    names = list(MODELS)
    model = rng.integers(0, len(names), n_points)
    data = rng.integers(0, len(DATA), n_points)
    samples = np.round(10 ** rng.uniform(8, 10.5, n_points)).astype(int)
    gmacs = np.array([MODELS[names[i]] for i in model])
    points = [PointRow(f"p{i:07d}", names[model[i]], DATA[data[i]], int(samples[i]), float(gmacs[i]),
                       "succeeded", "run", {}) for i in range(n_points)]  # fmt: skip
    engine = connect(url)
    start = time.perf_counter()
    record_points(engine, FAMILY, points)
    points_s = time.perf_counter() - start
    compute = gmacs * samples
    rows = []
    for k, (dataset, metric) in enumerate(METRICS):
        error = (4 + k / 4) * compute ** (-0.1 - k / 200) * 10 ** np.abs(rng.normal(0, 0.05, n_points))
        value = 1 - np.minimum(error, 0.99)
        rows += [{"point_id": p.id, "dataset": dataset, "metric": metric, "value": float(v), "reason": None}
                 for p, v in zip(points, value, strict=True)]  # fmt: skip
    start = time.perf_counter()
    count = ingest_metrics(engine, rows)
    engine.dispose()
    return {"record_points_s": round(points_s, 2), "ingest_metrics_s": round(time.perf_counter() - start, 2),
            "metric_rows": count}  # fmt: skip


def one_group(engine: Engine, n: int = 100) -> list[str]:
    """The ids of n runs of one data source: what a status poll stores when they land."""
    rows, _ = fetch(engine, parse_filters([f"family={FAMILY}", "data=YFCC-15M"]), metrics=False)
    return [r["id"] for r in rows[:n]]


def profile(url: str, top: int) -> dict[str, object]:
    """A second refit under cProfile: the stages' cumulative seconds and the top functions."""
    engine = connect(url)
    prof = cProfile.Profile()
    prof.enable()
    study.refit(engine, FAMILY)
    prof.disable()
    stats = pstats.Stats(prof)
    stages = {"selection.groups_of": ("selection.py", "groups_of"),
              "selection.metrics_of": ("selection.py", "metrics_of"),
              "selection.read_groups (the family's runs and values, once)": ("selection.py", "read_groups"),
              "query.point_columns (SQL)": ("query.py", "point_columns"),
              "query.metric_values (SQL)": ("query.py", "metric_values"),
              "selection.load (each law's runs)": ("selection.py", "load"),
              "resample.sparse_sums": ("resample.py", "sparse_sums"),
              "forms.fit_form (frontier + fit + bootstrap)": ("forms.py", "fit_form"),
              "powerlaw.bootstrap": ("powerlaw.py", "bootstrap"),
              "history.record_fits": ("history.py", "record_fits")}  # fmt: skip
    raw = stats.stats  # type: ignore[attr-defined]
    cumulative = {label: round(sum(v[3] for k, v in raw.items() if k[0].endswith(f) and k[2] == fn), 3)
                  for label, (f, fn) in stages.items()}  # fmt: skip
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(top)
    body = text.getvalue()
    lines = body[body.find("ncalls") :].splitlines()
    total = round(stats.total_tt, 3)  # type: ignore[attr-defined]
    return {"total_s": total, "stages_cumulative_s": cumulative, "top_by_cumulative": lines}


def bench(n_points: int, top: int) -> dict[str, object]:
    load = {"before": os.getloadavg()[0]}  # a shared machine's load moves every time here
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/refit.db"
        filled = fill(url, n_points)
        print(f"store: {n_points} runs, {filled['metric_rows']} metric rows "
              f"({filled['record_points_s']} + {filled['ingest_metrics_s']} s)")  # fmt: skip
        engine = connect(url)
        start = time.perf_counter()
        refits = study.refit(engine, FAMILY)
        seconds = time.perf_counter() - start
        load["after"] = os.getloadavg()[0]
        engine.dispose()
        fitted = [r for r in refits if r.fitted is not None]
        print(f"refit: {seconds:.2f} s for {len(fitted)} laws ({len(refits)} asked)")
        engine = connect(url)
        landed = one_group(engine, LANDED)
        start = time.perf_counter()
        partial = study.refit(engine, FAMILY, landed=landed)
        landed_s = time.perf_counter() - start
        engine.dispose()
        print(f"refit after {len(landed)} points of one group land: {landed_s:.2f} s for {len(partial)} laws")
        prof = profile(url, top)
        print(f"profiled refit: {prof['total_s']} s; stages: {prof['stages_cumulative_s']}")
    groups = sorted({r.group for r in refits})
    runs_per_law = sorted({len(r.fitted.runs) for r in fitted})  # type: ignore[union-attr]
    settings = laws.Settings()
    note = (f"study.refit on SQLite: {len(fitted)} laws ({len(METRICS)} metrics × {len(groups)} sources: "
            f"{', '.join(groups)}), {settings.form} form, {settings.frontier} frontier, {settings.n_boot} "
            f"resamples each, ~{runs_per_law[0]}–{runs_per_law[-1]} runs per law; the first refit, so "
            f"each law is also added to the fit history")  # fmt: skip
    name = f"refit, {len(METRICS)} metrics × {len(groups)} groups, {n_points:,} runs"
    row = figure(name, round(seconds, 3), "s", target=f"< {TARGET_S:g} s", met=seconds < TARGET_S, note=note,
                 before=BEFORE_S)  # fmt: skip
    said = (f"study.refit(landed=…) as `scaling status` calls it: the {len(partial)} laws of the group "
            "holding them (YFCC), the others untouched")  # fmt: skip
    partial_row = figure(f"refit after {LANDED} points of one group land, {n_points:,} runs",
                         round(landed_s, 3), "s", target=f"< {TARGET_S:g} s", met=landed_s < TARGET_S,
                         note=said)  # fmt: skip
    return {
        "machine": machine(),
        "figures": [row, partial_row],
        "points": n_points,
        "store": filled,
        "refit_s": round(seconds, 3),
        "load_avg_1min": load,
        "laws": len(fitted),
        "groups": groups,
        "metrics": [f"{d}/{m}" for d, m in METRICS],
        "recorded": sum(r.recorded for r in refits),
        "runs_per_law": runs_per_law,
        "alphas": {f"{r.group} {r.dataset}/{r.metric}": round(r.fitted.law.alpha, 4) for r in fitted},  # type: ignore[union-attr]
        "profile": {"note": "a second refit of the same store, under cProfile (nothing new to record)"}
        | prof,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=25, help="functions listed in the profile")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "refit.json")
    args = parser.parse_args()
    out = bench(args.points, args.top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
