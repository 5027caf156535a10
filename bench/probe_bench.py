"""Linear-probe benchmark: scaling/probe.py on the CPU and, where one is present, on CUDA,
on the same synthetic features, so that "one algorithm on CPU and GPU" is measured, not
assumed: the metrics of the two devices side by side, and each device's time.

The features: ``--classes`` Gaussian classes in ``--dim`` dimensions (fixed centres, noise
1.5), ``--train`` and ``--test`` samples, k-shot probes at ``--shots`` with ``--seeds`` draws.
Float64 L-BFGS on both devices: the metrics should agree to a few parts in 10⁴ (the order
of floating-point sums differs); the bench records the largest difference.

    .venv/bin/python bench/probe_bench.py                       # CPU, and CUDA if present
    .venv/bin/python bench/probe_bench.py --train 100000 --dim 768 --classes 100

Writes bench/results/probe.json (``--output``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from figures import figure, machine

from scaling import probe

RESULTS = Path(__file__).resolve().parent / "results"


def features(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(0).normal(size=(classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(scale=1.5, size=(n, dim)), y


def run(device: str, args: argparse.Namespace) -> dict[str, Any]:
    train = features(args.train, args.dim, args.classes, 1)
    test = features(args.test, args.dim, args.classes, 2)
    start = time.perf_counter()
    metrics = probe.evaluate(train, test, tuple(args.shots), args.seeds, device)
    return {"device": device, "seconds": round(time.perf_counter() - start, 3), "metrics": metrics}


def figures_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows (bench/table.py): the probe's time on each device."""
    return [figure(f"linear probe on {run['device']}", run["seconds"], "s",
                   note=f"probe_acc1 {run['metrics']['probe_acc1']:.4f}") for run in r["runs"]]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 10])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS / "probe.json")
    args = parser.parse_args(argv)
    import torch

    runs = [run("cpu", args)]
    if torch.cuda.is_available():
        runs.append(run("cuda", args))
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "output"},
                           "host": platform.node(), "torch": torch.__version__, "runs": runs}  # fmt: skip
    if len(runs) == 2:
        cpu, gpu = (r["metrics"] for r in runs)
        out["largest_difference"] = max(abs(cpu[k] - gpu[k]) for k in cpu if np.isfinite(cpu[k]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    out |= {"machine": machine(), "figures": figures_of(out)}
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    for r in runs:
        print(f"{r['device']}: {r['seconds']} s, probe_acc1 {r['metrics']['probe_acc1']:.4f}")
    if "largest_difference" in out:
        print(f"largest CPU-GPU difference: {out['largest_difference']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
