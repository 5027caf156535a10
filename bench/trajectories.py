"""Branches against separate runs: the same toy grid trained both ways, for real, on the CPU.

What it measures. The toy sweep's points (models x data sets x samples seen, the demo's
grid by default) are planned, launched on this machine (``cluster=local``) and followed to
the end twice: ``samples_mode=separate`` (one cosine run per point, today's default) and
``samples_mode=branches`` (a constant-LR trunk per model and data set in segments, a
cooldown branch per point). Per mode: the CPU-hours planned and spent (what the store
counts of every attempt's allocation), the wall time, the jobs run, and the law
E = β·C^α of toy_shapes/acc1 fitted on the final points (the branches; the trunk's
checkpoints left out), with its bootstrap interval. The laws agree when each α lies
inside the other's interval. Per point the two modes' accuracies at the same samples-seen
target are listed side by side.

The two modes run one after the other on the same machine with the same parallelism, so
their spending is measured beside each other; other load on the machine slows either.

    .venv/bin/python bench/trajectories.py                       # the demo's grid
    .venv/bin/python bench/trajectories.py --samples 4k,8k,16k,32k,64k --models toy-s

Writes bench/results/trajectories.json and trajectories.md (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import figure

RESULTS = Path(__file__).resolve().parent / "results"


def _overrides(args: argparse.Namespace, root: Path, mode: str) -> list[str]:
    return [f"model=[{args.models}]", f"data=[{args.data}]", f"samples_seen=[{args.samples}]",
            f"samples_mode={mode}", f"cooldown={args.cooldown}", f"data_root={root}",
            f"runs_root={root / mode}", f"clusters.local.parallelism={args.parallelism}"]  # fmt: skip


def run_mode(args: argparse.Namespace, root: Path, mode: str) -> dict[str, Any]:
    """Launch one mode's sweep, follow it to its end, fit its law."""
    from scaling.dispatch import launch, reconcile
    from scaling.fit import laws
    from scaling.plan import plan
    from scaling.store import connect, runs

    p = plan("toy", _overrides(args, root, mode))
    url = f"sqlite:///{root / mode}.db"
    engine = connect(url)
    started = time.monotonic()
    report = launch(p, engine)
    while (summary := reconcile(p, engine)).active:
        time.sleep(2)
    wall = time.monotonic() - started
    if summary.done != len(p.points) or summary.failures:  # a trunk's segments end trained
        raise SystemExit(f"{mode}: not every point finished: {summary.counts} {summary.failures[:3]}")
    fitted = laws.fit(engine, [f"sweep={p.sweep.name}"], "toy_shapes", "acc1")
    law = fitted.law
    frame = runs(url, f"sweep={p.sweep.name}", "checkpoints=final")
    by_target = {}
    for q in p.points:
        if q.point.trajectory is None or not q.point.trajectory.from_checkpoint:
            row = frame[frame["id"] == q.point.id].iloc[0]
            key = f"{q.point.model} {q.point.data} {q.point.samples_seen_target}"
            by_target[key] = {"samples_seen": int(row["samples_seen"]), "acc1": float(row["toy_shapes/acc1"])}
    return {
        "points": len(p.points),
        "final_points": len(by_target),
        "jobs": report.submitted + sum(q.point.evaluated for q in p.points),  # trainings, evaluations
        "cpu_h_planned": p.total_gpu_hours,
        "cpu_h_spent": summary.spent.get("CPU-h", 0.0),
        "wall_s": round(wall, 1),
        "law": {
            "alpha": law.alpha,
            "alpha_ci": list(law.alpha_ci),
            "beta": law.beta,
            "r2": law.r2,
            "n_runs": law.n_runs,
            "n_frontier": len(law.frontier),
            "method": law.method,
            "checkpoints_left_out": fitted.left_out,
        },
        "by_target": by_target,
    }


def figures_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows (bench/table.py): the grid as branches of constant-LR trunks beside
    the same grid as separate cosine runs, in the same run."""
    br, sep = r["modes"]["branches"], r["modes"]["separate"]
    peer = "the same grid as separate cosine runs"
    return [
        figure("toy grid as branches: CPU-hours spent", round(br["cpu_h_spent"], 3), "CPU-h", peer=peer,
               peer_value=round(sep["cpu_h_spent"], 3), note=f"{br['final_points']} finished points each"),
        figure("toy grid as branches: wall time", br["wall_s"], "s", peer=peer, peer_value=sep["wall_s"]),
        figure("toy grid as branches: fitted α", round(br["law"]["alpha"], 4), "", peer=peer,
               peer_value=round(sep["law"]["alpha"], 4), met=r["alphas_agree"],
               target="each α inside the other's 95 % interval"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="toy-s,toy-m")
    parser.add_argument("--data", default="toy-4k,toy-64k")
    parser.add_argument("--samples", default="4k,16k,64k")
    parser.add_argument("--cooldown", type=float, default=0.2)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "trajectories.json")
    args = parser.parse_args()

    from scaling import toyworld
    from scaling.config import load_sweep

    # Kept if a mode fails, for its logs; removed once both have finished.
    root = Path(tempfile.mkdtemp(prefix="clipscale-trajectories-"))
    spec = load_sweep("toy", [f"data=[{args.data}]"])
    toyworld.write_world(root, {name: d.num_samples for name, d in spec.datasets.items()})
    modes = {mode: run_mode(args, root, mode) for mode in ("separate", "branches")}
    shutil.rmtree(root)
    sep, br = modes["separate"]["law"], modes["branches"]["law"]
    agree = (
        sep["alpha_ci"][0] <= br["alpha"] <= sep["alpha_ci"][1]
        and br["alpha_ci"][0] <= sep["alpha"] <= br["alpha_ci"][1]
    )
    result = {
        "what": "the toy grid trained as separate cosine runs and as branches of constant-LR trunks",
        "grid": {
            "models": args.models,
            "data": args.data,
            "samples_seen": args.samples,
            "cooldown": args.cooldown,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "parallelism": args.parallelism},
        "modes": modes,
        "alphas_agree": agree,
        "cpu_h_spent_ratio": modes["branches"]["cpu_h_spent"] / modes["separate"]["cpu_h_spent"],
        "cpu_h_planned_ratio": modes["branches"]["cpu_h_planned"] / modes["separate"]["cpu_h_planned"],
        "wall_ratio": modes["branches"]["wall_s"] / modes["separate"]["wall_s"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result["figures"] = figures_of(result)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# {r['what']}", "", f"Grid: {r['grid']}; machine: {r['machine']}.", "",
             "| mode | points | CPU-h planned | CPU-h spent | wall (s) | α | α interval | R² | runs fitted |",
             "|:---|---:|---:|---:|---:|---:|:---|---:|---:|"]  # fmt: skip
    for mode, m in r["modes"].items():
        law = m["law"]
        lo, hi = law["alpha_ci"]
        lines.append(f"| {mode} | {m['points']} | {m['cpu_h_planned']:.3f} | {m['cpu_h_spent']:.3f} | "
                     f"{m['wall_s']:.0f} | {law['alpha']:.4f} | [{lo:.4f}, {hi:.4f}] | {law['r2']:.3f} | "
                     f"{law['n_runs']} |")  # fmt: skip
    lines += ["", f"αs within each other's intervals: {r['alphas_agree']}. Branches against separate: "
              f"CPU-h spent ×{r['cpu_h_spent_ratio']:.2f}, planned ×{r['cpu_h_planned_ratio']:.2f}, "
              f"wall ×{r['wall_ratio']:.2f}.", "",
              "| point | separate acc1 | branches acc1 |", "|:---|---:|---:|"]  # fmt: skip
    sep, br = r["modes"]["separate"]["by_target"], r["modes"]["branches"]["by_target"]
    for key in sep:
        if key in br:
            lines.append(f"| {key} | {sep[key]['acc1']:.3f} | {br[key]['acc1']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
