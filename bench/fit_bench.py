"""Fitter benchmark: frontier + fit + 1,000 bootstrap resamples (each refitting the
frontier) on 10,000 runs, for each frontier method (target: < 1 s); then each form fitted
the Epoch way through the geometric frontier with its bootstrap, the audit of `form=auto`
(every form at a compute cut), and the error surface over all 10,000 runs.

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

from scaling.fit import METHODS, fit_law, laws
from scaling.fit.audit import compute_cut
from scaling.fit.forms import FORMS, fit_form
from scaling.fit.surface import fit_surface

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
    figures["forms"] = forms(compute, error, boot)
    figures["surface"] = surface(rng, runs, boot)
    return figures


def timed(fn: object) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()  # type: ignore[operator]
    return out, round(time.perf_counter() - start, 3)


def forms(compute: np.ndarray, error: np.ndarray, boot: int) -> dict[str, object]:
    out: dict[str, object] = {}
    ids = [str(i) for i in range(len(compute))]
    for form in FORMS:
        law, seconds = timed(lambda f=form: fit_form(f, compute, error, ids, n_boot=boot, objective="huber"))
        out[form] = {"s": seconds, "formula": law.formula, "boot_valid": law.boot_valid,  # type: ignore[attr-defined]
                     "reached": law.reached, "tried": law.tried}  # type: ignore[attr-defined]  # fmt: skip
        print(f"{form:>10}: {seconds:.3f} s, {law.formula}")  # type: ignore[attr-defined]
    cut = compute_cut(compute)

    def auto() -> object:  # form=auto's audit: every form at the cut, 200 resamples each
        settings = laws.Settings(method="geometric")
        return laws.choose_form(settings, compute, error, ids, compute >= cut, "top quarter")

    choice, seconds = timed(auto)
    out["auto_audit"] = {"s": seconds, "chosen": choice.form, "reason": choice.reason}  # type: ignore[attr-defined]
    print(f"auto audit: {seconds:.3f} s, chose {choice.form}")  # type: ignore[attr-defined]
    return out


def surface(rng: np.random.Generator, runs: int, boot: int) -> dict[str, object]:
    n = 10 ** rng.uniform(7, 10, runs)
    d = 10 ** rng.uniform(9, 12, runs)
    loss = (1.8 + 480 / n**0.35 + 2100 / d**0.37) * np.exp(rng.normal(0, 0.01, runs))
    fit, seconds = timed(lambda: fit_surface(n, d, loss, size="params", n_boot=min(boot, 200)))
    print(f"   surface: {seconds:.3f} s (200 resamples), {fit.formula}")  # type: ignore[attr-defined]
    return {"s": seconds, "boot": min(boot, 200), "formula": fit.formula, "reached": fit.reached,  # type: ignore[attr-defined]
            "tried": fit.tried}  # type: ignore[attr-defined]  # fmt: skip


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
