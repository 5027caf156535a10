"""CLI start-up: ``scaling plan``, ``scaling runs`` and ``scaling fit`` timed as a user runs them
(a fresh process each, best of several), with what each imports and the heaviest imports
from ``python -X importtime`` (target: < 0.5 s for the commands that do not fit; < 1 s for a
fit with its bootstrap).

The store is a generated 18-run family (3 models × 2 data sets × 3 samples seen, on
E = 8·C^-0.2 with noise), imported through ``scaling import``.

Writes bench/results/startup.json.

    python bench/startup_bench.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from figures import figure, machine

HERE = Path(__file__).resolve().parent
SCALING = [sys.executable, "-m", "scaling.cli"]
COMMANDS = {
    "plan": (["plan", "sweep=paper"], 0.5),
    "runs": (["runs", "family=bench", "status=succeeded"], 0.5),
    "fit": (["fit", "family=bench", "dataset=imagenet1k", "metric=acc1"], 1.0),
}
# Measured on the commit before the start-up fixes (e8cb7ef's parent), on this 2-core machine,
# 2026-12-06, as the commit message of e8cb7ef says: kept with their provenance.
BEFORE = {"commit": "430be0b", "runs": 0.80, "fit": 1.22}
COLUMNS = ["arch", "samples_seen", "gmacs", "upstream_dataset", "downstream_dataset", "acc1", "name"]


def write_table(path: Path) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for arch, gmacs in (("m-s", 2.0), ("m-m", 8.0), ("m-l", 32.0)):
            for data in ("d-4k", "d-64k"):
                for samples in (1e6, 1e7, 1e8):
                    error = 8 * (gmacs * samples) ** -0.2 * 10 ** rng.normal(0, 0.01)
                    row = {"arch": arch, "samples_seen": samples, "gmacs": gmacs, "upstream_dataset": data}
                    writer.writerow(
                        {**row, "downstream_dataset": "imagenet1k", "acc1": 1 - error, "name": "run"}
                    )


def timed(args: list[str], cwd: Path, env: dict[str, str], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([*SCALING, *args], cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def imports(args: list[str], cwd: Path, env: dict[str, str], top: int = 8) -> tuple[int, list[str]]:
    """How many modules the command imports, and the heaviest (cumulative µs) of its own."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "scaling.cli", *args], cwd=cwd, env=env,
                         check=True, capture_output=True, text=True).stderr  # fmt: skip
    rows = []
    for line in out.splitlines():  # "import time: self | cumulative | name", nested names indented
        if line.startswith("import time:") and "cumulative" not in line:
            _, cumulative, name = line[len("import time:") :].split("|")
            rows.append((int(cumulative), name.rstrip()[1:]))
    top_level = [(us, name) for us, name in rows if not name.startswith(" ")]
    heavy = sorted(top_level, reverse=True)[:top]
    return len(rows), [f"{name} {us / 1e3:.0f} ms" for us, name in heavy]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        env = {**os.environ, "CLIPSCALE_DB": f"sqlite:///{cwd / 'results.db'}"}
        write_table(cwd / "bench.csv")
        subprocess.run([*SCALING, "import", "bench.csv", "--family", "bench"], cwd=cwd, env=env, check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([*SCALING, "plan", "sweep=paper"], cwd=cwd, env=env, check=True, capture_output=True)
        for name, (command, target) in COMMANDS.items():
            best, median = timed(command, cwd, env, args.repeats)
            modules, heavy = imports(command, cwd, env)
            results[name] = {"command": "scaling " + " ".join(command), "best_s": round(best, 3),
                             "median_s": round(median, 3), "modules": modules, "heaviest": heavy}  # fmt: skip
            heaviest = ", ".join(heavy[:3])
            note = f"best of {args.repeats}, a fresh process each; {modules} modules; heaviest: {heaviest}"
            rows.append(figure(f"start-up: scaling {name}", round(best, 3), "s", f"< {target:g} s",
                               best < target, before=BEFORE.get(name), note=note))  # fmt: skip
            print(f"scaling {name}: {best:.3f} s (median {median:.3f}); {modules} modules; {heaviest}")
    out = {"machine": machine(), "commands": results, "before": BEFORE, "figures": rows}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "startup.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
