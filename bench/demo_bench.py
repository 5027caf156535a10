"""`make demo` timed end to end in a fresh clone of this checkout (target: < 10 min on 2 cores):
the toy grid trained for real on the CPU, ending in a fitted law and a plot. The virtual
environment is this checkout's (setup is pip's time, not clipscale's: it is left out and said so).

Writes bench/results/demo.json.

    python bench/demo_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from figures import figure, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> None:
    venv = Path(os.environ.get("VENV", REPO / ".venv")).resolve()
    with tempfile.TemporaryDirectory(prefix="clipscale-demo-") as tmp:
        clone = Path(tmp) / "clipscale"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        (venv / ".installed").touch()  # the venv is current: make's setup step has nothing to do
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPSCALE_", "MLFLOW_"))}
        start = time.perf_counter()
        done = subprocess.run(
            ["make", "demo", f"VENV={venv}"], cwd=clone, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"make demo failed: {done.stderr.strip().splitlines()[-1:]}")
        command = [
            str(venv / "bin" / "scaling"),
            "fit",
            "sweep=toy",
            "metric=toy_shapes/acc1",
            "--format",
            "json",
        ]
        fit = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, check=True)
        law = json.loads(fit.stdout)
        plots = sorted(p.name for p in (clone / "reports" / "toy").glob("*.png"))
    note = (f"setup left out (the venv reused); law {law['formula']} on {law['n_runs']} runs, "
            f"R² {law['r2']:.3f}; {len(plots)} plots")  # fmt: skip
    row = figure("make demo wall time", round(wall / 60, 2), "min", "< 10 min", wall < 600, note=note)
    out = {
        "machine": machine(),
        "wall_s": round(wall, 1),
        "law": law["formula"],
        "plots": plots,
        "figures": [row],
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "demo.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"make demo: {wall / 60:.1f} min; {note}")


if __name__ == "__main__":
    main()
