"""Dispatch at scale on the one-node dev Slurm: plan + submit a 1,000-point sweep, then
reconcile the status of its 1,000 jobs; counts the sbatch and sacct calls made.

Targets (issue 5): launch < 10 s with at most one sbatch per resource class; one status
reconcile < 1 s with one sacct call. Needs root (it starts launchers/slurm-dev-cluster.sh
if no dev cluster is up, and drains its node so the jobs stay queued while measured).

    .venv/bin/python bench/dispatch_bench.py   # writes bench/results/dispatch.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launchers" / "slurm-dev-cluster.sh"
OUT = REPO / "bench" / "results" / "dispatch.json"

SWEEP = """\
defaults:
  - gpu: a100
  - cluster: slurm
  - _self_
name: bench1000
data_root: {root}
runs_root: {runs}
eval:
  root: {root}/toy/eval
  sets:
    - {{name: toy_shapes, task: zeroshot_classification}}
model: [toy-s, toy-m]
data: [toy-4k]
samples_seen: [{samples}]
gpus: [1, 2]
train: {{lr: 2.0e-3, warmup: 2, batch_size: 32, gpus: 1, workers: 1, precision: fp32, epochs: null}}
clusters:
  slurm: {{gpus_per_node: 0, cpus_per_gpu: 1, mem_gb_per_gpu: 1, time_limit_min: 60}}
"""


def shim(folder: Path, log: Path) -> dict[str, str]:
    """sbatch and sacct wrappers that count their calls, first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in ("sbatch", "sacct", "squeue", "scontrol", "sinfo"):
        real = shutil.which(tool)
        assert real, f"{tool} not found: is Slurm installed?"
        (folder / tool).write_text(f'#!/bin/sh\necho {tool} >> {log}\nexec {real} "$@"\n')
        (folder / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def calls(log: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in log.read_text().split() if log.exists() else []:
        out[line] = out.get(line, 0) + 1
    log.unlink(missing_ok=True)
    return out


def _cancel_all(db: Path) -> None:
    """Cancel the benchmark's arrays before the node takes jobs again."""
    import sqlite3

    if not db.exists():
        return
    with sqlite3.connect(db) as conn:
        jobs = [j for (j,) in conn.execute("SELECT job_id FROM submissions WHERE job_id IS NOT NULL")]
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True)


def main() -> int:
    started_cluster = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode != 0
    if started_cluster:
        subprocess.run([str(SCRIPT), "up"], check=True, capture_output=True)
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()[0]
    subprocess.run(["scontrol", "update", f"NodeName={node}", "State=DRAIN", "Reason=bench"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="clipscale-bench-"))
    try:
        from scaling import toyworld

        toyworld.write_world(tmp / "world", {"toy-4k": 4000})
        samples = ", ".join(str(4096 * (i + 1)) for i in range(250))  # 2 models x 250 x 2 GPU counts
        sweep = tmp / "bench1000.yaml"
        sweep.write_text(SWEEP.format(root=tmp / "world", runs=tmp / "runs", samples=samples))
        log = tmp / "calls.log"
        env = {**shim(tmp / "shim", log), "CLIPSCALE_CACHE_DIR": str(tmp / "cache")}
        db = f"sqlite:///{tmp / 'results.db'}"
        scaling = [sys.executable, "-m", "scaling.cli"]
        subprocess.run([*scaling, "plan", f"sweep={sweep}"], check=True, env=env, capture_output=True)
        calls(log)
        t = time.perf_counter()
        out = subprocess.run(
            [*scaling, "launch", f"sweep={sweep}", "--db", db], env=env, capture_output=True, text=True
        )
        launch_s = time.perf_counter() - t
        assert out.returncode == 0, out.stderr
        launched = out.stdout.strip().splitlines()[0]
        launch_calls = calls(log)
        t = time.perf_counter()
        out = subprocess.run([*scaling, "status", f"sweep={sweep}", "--db", db, "--no-tracking"], env=env,
                             capture_output=True, text=True)  # fmt: skip
        status_cli_s = time.perf_counter() - t
        assert out.returncode == 0, out.stderr
        status_calls = calls(log)
        # The reconcile itself, in process (what `status --watch` repeats), best of 3.
        os.environ.update({"PATH": env["PATH"], "CLIPSCALE_CACHE_DIR": env["CLIPSCALE_CACHE_DIR"]})
        from scaling.dispatch import reconcile
        from scaling.plan import plan
        from scaling.store import connect

        p = plan(str(sweep), [])
        engine = connect(db)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            summary = reconcile(p, engine)
            times.append(time.perf_counter() - t)
        reconcile_calls = calls(log)
        result = {
            "points": len(p.points),
            "resource_classes": 2,
            "launch_s": round(launch_s, 2),
            "launch_output": launched,
            "launch_calls": launch_calls,
            "status_cli_s": round(status_cli_s, 2),
            "status_calls": status_calls,
            "reconcile_s_best_of_3": round(min(times), 3),
            "reconcile_calls_3_runs": reconcile_calls,
            "queued_after": summary.counts,
            "targets": {"launch_s": 10, "sbatch_per_class": 1, "reconcile_s": 1, "sacct_per_reconcile": 1},
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        _cancel_all(tmp / "results.db")
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], capture_output=True)
        if started_cluster:
            subprocess.run([str(SCRIPT), "down"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
