"""Planning benchmark: the paper sweep widened to 10,200 points (5 models × 3 data sets × 20
samples-seen values × 34 learning rates as an axis), MACs cached (target: < 1 s), and the
29-point paper grid beside it. A profile names where the time goes.

Writes figures to bench/results/plan.json.

    python bench/plan_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import time
from pathlib import Path
from typing import Any

from figures import figure, machine

from scaling.plan import plan

HERE = Path(__file__).resolve().parent
SAMPLES = [f"{x:g}B" for x in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 18, 22, 28, 34)]
RATES = [f"{1e-4 * (1 + i / 4):.4g}" for i in range(34)]
WIDE = [
    "sweep=paper",
    "model=[ViT-B-32,ViT-B-16,ViT-L-14,ViT-H-14,ViT-g-14]",
    "data=[LAION-80M,LAION-400M,LAION-2B]",
    f"samples_seen=[{','.join(SAMPLES)}]",
    f"+lr=[{','.join(RATES)}]",
    "points=[]",  # the paper's own epochs per point: here every point's are derived
]


def timed(overrides: list[str], repeats: int) -> tuple[int, float]:
    best, n = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = len(plan("paper", overrides[1:]).points)
        best = min(best, time.perf_counter() - start)
    return n, best


def hot_spots(overrides: list[str], top: int = 8) -> list[str]:
    profiler = cProfile.Profile()
    profiler.enable()
    plan("paper", overrides[1:])
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return [line.strip() for line in out.getvalue().splitlines() if "(" in line and "/" in line][:top]


def figures_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows (bench/table.py)."""
    before = r.get("before", {})
    return [
        figure(f"plan {r['wide_points']:,} points (MACs cached)", r["wide_plan_s"], "s", "< 1 s",
               r["wide_plan_s"] < 1.0, before=before.get("wide_plan_s"),
               note=f"before: {before.get('hot_spot', '')}" if before else ""),
        figure(f"plan the paper's {r['paper_points']} points", r["paper_plan_s"], "s", "< 1 s",
               r["paper_plan_s"] < 1.0, before=before.get("paper_plan_s")),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    plan("paper", WIDE[1:])  # count and cache the MACs once
    n_wide, wide_s = timed(WIDE, args.repeats)
    n_paper, paper_s = timed(["sweep=paper"], args.repeats)
    figures = {
        "wide_points": n_wide, "wide_plan_s": round(wide_s, 3), "target_s": 1.0,
        "paper_points": n_paper, "paper_plan_s": round(paper_s, 3),
        "hot_spots": hot_spots(WIDE), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }  # fmt: skip
    print(
        f"{n_wide:,} points: {wide_s:.2f} s (best of {args.repeats}); paper {n_paper} points: {paper_s:.2f} s"
    )
    (HERE / "results").mkdir(exist_ok=True)
    old = HERE / "results" / "plan.json"
    if old.exists() and "before" in (kept := json.loads(old.read_text())):
        figures["before"] = kept["before"]  # measured once, on the commit before the fix
    figures |= {"machine": machine(), "figures": figures_of(figures)}
    (HERE / "results" / "plan.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
