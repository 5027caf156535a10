"""Fitter benchmark: frontier + fit + 1,000 bootstrap resamples (each refitting the
frontier) on 10,000 runs, for each frontier method. Target: < 1 s.

Writes figures to bench/results/fit.json.

    python bench/fit_bench.py [--runs 10000] [--boot 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from scaling.fit import METHODS, fit_law

HERE = Path(__file__).resolve().parent


def bench(runs: int, boot: int, repeats: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    compute = 10 ** rng.uniform(9, 14, runs)
    # A law plus sub-optimal runs above it, as a real grid has.
    error = np.minimum(6 * compute**-0.11 * 10 ** np.abs(rng.normal(0, 0.05, runs)), 1.0)
    figures: dict[str, object] = {"runs": runs, "boot": boot, "target_s": 1.0, "cpus": os.cpu_count(),
                                  "machine": platform.processor() or platform.machine()}  # fmt: skip
    for method in METHODS:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            law = fit_law(compute, error, method=method, n_boot=boot)
            times.append(time.perf_counter() - start)
        figures[method] = {
            "best_s": round(min(times), 3), "median_s": round(sorted(times)[len(times) // 2], 3),
            "alpha": round(law.alpha, 4), "alpha_ci": [round(x, 4) for x in law.alpha_ci],
            "boot_valid": law.boot_valid,
        }  # fmt: skip
        print(f"{method:>7}: {min(times):.3f} s (best of {repeats}), α = {law.alpha:.4f}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fit.json")
    args = parser.parse_args()
    figures = bench(args.runs, args.boot, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
