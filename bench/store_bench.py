"""Results-store benchmark: bulk ingest of 1M metric rows, filtered queries over 100k points.

Targets (SQLite): ingest < 10 s, filtered query < 50 ms. Writes figures to
bench/results/store.json.

    python bench/store_bench.py [--url sqlite:///path.db] [--points 100000] [--metrics 10]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from scaling.store import PointRow, connect, ingest_metrics, record_points, runs
from scaling.store.query import fetch, parse_filters

HERE = Path(__file__).resolve().parent
MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-g-14")
DATA = ("LAION-80M", "LAION-400M", "LAION-2B")
METRICS = [(d, m) for d in ("imagenet1k", "imagenetv2", "imagenet_sketch", "objectnet", "mscoco_captions")
           for m in ("acc1", "acc5")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "store.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{tmp}/bench.db"
        figures = bench(url, args.points, args.metrics)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def bench(url: str, n_points: int, n_metrics: int) -> dict[str, object]:
    import pandas  # noqa: F401  (imported here so no query timing pays for it)

    rng = random.Random(0)
    engine = connect(url)
    points = [
        PointRow(
            f"p{i:07d}",
            rng.choice(MODELS),
            rng.choice(DATA),
            rng.choice((3, 13, 34)) * 10**9,
            rng.uniform(5, 300),
            "succeeded",
            "run",
            {},
        )
        for i in range(n_points)
    ]
    start = time.perf_counter()
    record_points(engine, "bench", points)
    points_s = time.perf_counter() - start
    rows = (
        {"point_id": p.id, "dataset": d, "metric": m, "value": rng.random(), "reason": None}
        for p in points
        for d, m in METRICS[:n_metrics]
    )
    start = time.perf_counter()
    count = ingest_metrics(engine, rows)
    ingest_s = time.perf_counter() - start
    queries = {
        "model+samples+metric": ["model=ViT-L-14", "samples_seen>=34B", "imagenet1k/acc1>0.999"],
        "one point by id": ["id=p0050000"],
        "metric threshold only": ["imagenet1k/acc1>0.9995"],
    }  # fmt: skip
    timings = {}
    for name, filters in queries.items():
        parsed = parse_filters(filters)
        fetch(engine, parsed)  # warm the cache once, as a running session would be
        samples = []
        for _ in range(20):
            start = time.perf_counter()
            found, _ = fetch(engine, parsed)
            samples.append(time.perf_counter() - start)
        start = time.perf_counter()
        frame = runs(url, *filters, engine=engine)
        timings[name] = {
            "rows": len(found),
            "sql_median_ms": round(statistics.median(samples) * 1000, 2),
            "dataframe_ms": round((time.perf_counter() - start) * 1000, 2),
            "columns": len(frame.columns),
        }
    return {
        "url": url.split("///")[0] + "///…",
        "points": n_points,
        "metric_rows": count,
        "record_points_s": round(points_s, 2),
        "ingest_metrics_s": round(ingest_s, 2),
        "ingest_rows_per_s": round(count / ingest_s),
        "queries": timings,
        "targets": {"ingest_1M_s": 10, "filtered_query_ms": 50},
    }


if __name__ == "__main__":
    main()
