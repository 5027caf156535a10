"""GPU training benchmark: clipscale's job path against plain open_clip_train, same argv.

Training throughput and model-FLOPs utilisation (MFU) of a point trained through
clipscale's own job path, against plain ``open_clip_train.main.main`` with the same argv.

What it measures, per model: steady-state samples/s of each path on open_clip's synthetic
data (``--dataset-type synthetic``: one blank image and caption, transformed by the model's
own train preprocessing, so no disk or decoding enters the figure), their ratio
clipscale / plain (target >= 0.98: clipscale's wrapping should cost nothing), and on a GPU
the MFU of each path, samples/s x 6 x GMACs per sample / (GPUs x bf16 peak of conf/gpu),
with GMACs per sample as the planner counts them.

How. A one-point sweep (model, data toy-1k, samples seen = steps x batch, one epoch, the
synthetic data set in ``train.extra_args``) is planned with ``scaling.plan``; the toy-1k
shards are generated only because the job path's pre-flight check reads them (synthetic
mode ignores them). The clipscale path runs ``scaling.dispatch.job.PointJob(spec, "train")``
in a fresh process, exactly what a Slurm task or the local runner runs (pre-flight checks,
thread settings, rank records, the trainer's patches, ``trained.json``). The plain path
runs ``open_clip_train.main.main(open_clip_argv(...))`` in a fresh process after
registering the model, with a different ``--logs`` and the same intra-op thread count (so
that only clipscale's wrapping differs). Each path's samples/s is read from the trainer's
own out.log: the sum of samples over the sum of step times ("Batch (t)" x steps) of the
log windows after the first few (warm-up: start-up, torch.compile, allocator growth);
start-up and the final checkpoint never count. Repeats alternate the order of the two
paths; the best repeat is the headline (other load only slows a run down), the median is
kept beside it. Checkpoints are deleted after each run (disk).

Defaults: on CUDA, ViT-B-32 at 512 and ViT-L-14 at 128 per GPU in amp_bf16 (one GPU);
on CPU, toy-s at 128 in fp32, quick enough to run (and be tested) on two cores. What the
CPU run cannot measure: MFU (the CPU's peak is unknown, so it is null) and anything about
GPU kernels, bf16, torch.compile or the data loader keeping up with a GPU; it does show
whether the job path adds per-step overhead, within the noise of a small shared machine
(other processes on two cores move a run by 10-20 %: compare the repeats).

    .venv/bin/python bench/gpu_train.py                  # auto: CUDA if present, else CPU
    .venv/bin/python bench/gpu_train.py --device cuda --gpu h100 --torchcompile
    .venv/bin/python bench/gpu_train.py --models ViT-B-32:256 --steps 200 --repeats 3

Writes bench/results/gpu_train.json (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from figures import figure

from scaling.errors import ClipscaleError
from scaling.plan import PlannedPoint
from scaling.runspec import RunSpec

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 0.98
FLAGS = ("torchcompile", "grad_checkpointing", "local_loss", "gather_with_grad")
# Per device: models with their per-GPU batch, precision, optimizer steps, repeats, workers.
DEFAULTS: dict[str, dict[str, Any]] = {
    # 12 workers: open_clip's synthetic sample costs ~1.3 ms of CPU at 224 px, and B/32 on
    # an H100 wants several thousand samples/s; 4 of 16 cores stay for the main process.
    "cuda": {"models": [("ViT-B-32", 512), ("ViT-L-14", 128)], "precision": "amp_bf16", "steps": 100,
             "repeats": 2, "workers": 12},
    "cpu": {"models": [("toy-s", 128)], "precision": "fp32", "steps": 40, "repeats": 3, "workers": 1},
}  # fmt: skip
SWEEP = """\
defaults:
  - gpu: {gpu}
  - cluster: local
  - _self_
name: gpu-train-bench
data_root: {root}
runs_root: {runs}
model: [{model}]
data: [toy-1k]
samples_seen: [{samples}]
train: {train}
"""
# open_clip_train's per-step log line (train.py): samples so far, mean data and step time
# of the steps since the previous line.
_STEP = re.compile(
    r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<n>\d+)/\d+ .*?\] "
    r"Data \(t\): (?P<data>[\d.]+) Batch \(t\): (?P<batch>[\d.]+),"
)
# params.txt keys that name where a run writes, the only ones the two paths may differ in.
PATH_KEYS = {"logs", "log_path", "checkpoint_path", "name", "tensorboard_path"}


# ---------------------------------------------------------------- the two paths, in a child


def _child(kind: str, job: Path) -> int:
    """Entry point of a fresh process that trains one path; its exit code says how it went."""
    payload = pickle.loads(job.read_bytes())
    if kind == "clipscale":
        from scaling.dispatch.job import PointJob

        print(PointJob(payload, "train")())
        return 0
    from open_clip_train.main import main

    from scaling.registry import register_models

    model, argv = payload
    register_models([model])  # the toy models are not built into open_clip
    return 1 if main(argv) == -1 else 0


def _spawn(kind: str, payload: object, where: Path, env: dict[str, str]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    job = where / f"{kind}.pkl"
    job.write_bytes(pickle.dumps(payload))
    log = where / f"{kind}.child.log"
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, __file__, "--child", kind, str(job)], env=env,
                              stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    if done.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-30:])
        raise SystemExit(f"error: the {kind} path failed (exit {done.returncode}); {log}:\n{tail}")


def run_clipscale(spec: RunSpec, root: Path, env: dict[str, str]) -> Path:
    """The point trained as a node trains it; returns its run directory."""
    spec = replace(spec, runs_root=str(root / "clipscale"))
    _spawn("clipscale", spec, root, env)
    return spec.directory


def run_plain(spec: RunSpec, root: Path, device: str, env: dict[str, str], threads: int) -> Path:
    """The same trainer arguments, straight into open_clip_train; returns its run directory."""
    from scaling.trainargs import open_clip_argv

    logs = root / "plain"
    argv = open_clip_argv(spec.point, logs, device, None, spec.checkpoints)
    # PointJob sets the intra-op threads itself; the plain trainer gets the same count.
    threaded = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    _spawn("plain", (spec.model, argv), root, threaded)
    return logs / spec.point.id


# ---------------------------------------------------------------- reading a run


def steady_throughput(log_text: str, per_step: int, skip: int) -> dict[str, float]:
    """Samples/s over the log windows after the first ``skip``: samples over step time."""
    windows: list[tuple[float, float, float]] = []
    previous = (-1, 0)  # (epoch, samples) of the line before
    for m in _STEP.finditer(log_text):
        epoch, n = int(m["epoch"]), int(m["n"])
        start = previous[1] if previous[0] == epoch else 0
        steps = (n - start) / per_step
        windows.append((steps, steps * float(m["batch"]), steps * float(m["data"])))
        previous = (epoch, n)
    kept = windows[skip:]
    seconds = sum(w[1] for w in kept)
    if not kept or seconds <= 0:
        raise SystemExit(f"error: fewer than {skip + 1} timed log lines; raise --steps or lower --skip-logs")
    steps = sum(w[0] for w in kept)
    return {"samples_per_s": round(steps * per_step / seconds, 2), "steps_timed": int(steps),
            "data_wait_fraction": round(sum(w[2] for w in kept) / seconds, 4)}  # fmt: skip


def _params(run: Path) -> dict[str, str]:
    lines = (run / "params.txt").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def job_evidence(run: Path) -> dict[str, Any]:
    """What only the job path leaves behind: the training record and rank 0's record."""
    trained = json.loads((run / "trained.json").read_text())
    rank = json.loads((run / "ranks" / "0.json").read_text())
    return {"trained_json": True, "rank0_state": rank["state"], "samples_seen": trained["samples_seen"],
            "trained_samples_per_s": trained["samples_per_s"], "trained_mfu": trained["mfu"]}  # fmt: skip


# ---------------------------------------------------------------- one model


def plan_point(work: Path, model: str, batch: int, args: argparse.Namespace) -> tuple[PlannedPoint, RunSpec]:
    """The planned point and the RunSpec the dispatcher would build for it."""
    from scaling.dispatch.launch import run_spec
    from scaling.plan import plan, select

    train = {"lr": 1.0e-3, "warmup": 2, "batch_size": batch, "gpus": 1, "workers": args.workers,
             "precision": args.precision, "epochs": 1, "extra_args": ["--dataset-type", "synthetic"],
             **{flag: bool(getattr(args, flag)) for flag in FLAGS}}  # fmt: skip
    sweep = work / f"{model}.yaml"
    text = SWEEP.format(gpu=args.gpu, root=work / "world", runs=work / "runs", model=model,
                        samples=args.steps * batch, train=json.dumps(train))  # fmt: skip
    sweep.write_text(text)
    p = plan(str(sweep), [])
    planned = select(p)
    return planned, run_spec(p, planned)


def bench_model(
    work: Path, model: str, batch: int, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    """Both paths on one model: their throughput, MFU and ratio, and the evidence."""
    from scaling.compute import measured_mfu
    from scaling.distributed import cpus

    planned, spec = plan_point(work, model, batch, args)
    t = planned.point.train
    threads = max(1, cpus() - t.workers)  # what PointJob's distributed.set_threads gives
    speeds, runs = _measure(spec, work / model, args, env, threads)
    paths = {kind: _summary(s) for kind, s in speeds.items()}
    peak = spec.peak_tflops if args.device == "cuda" else None  # a CPU's peak is not known
    for summary in paths.values():
        mfu = peak and measured_mfu(planned.macs.total, summary["samples_per_s"], t.gpus, peak)
        summary["mfu"] = round(mfu, 4) if mfu else None
    a, b = _params(runs["clipscale"]), _params(runs["plain"])
    return {
        "point_id": planned.point.id, "per_gpu_batch": batch, "gpus": t.gpus, "precision": t.precision,
        "flags": {flag: getattr(t, flag) for flag in FLAGS}, "workers": t.workers, "threads": threads,
        "steps": planned.point.steps, "samples_seen": planned.point.samples_seen, "peak_tflops": peak,
        "gmacs_per_sample": planned.macs.total, "image_gmacs": planned.macs.image,
        "text_gmacs": planned.macs.text, "clipscale": paths["clipscale"], "plain": paths["plain"],
        "ratio": round(paths["clipscale"]["samples_per_s"] / paths["plain"]["samples_per_s"], 4),
        "trainer_args_differ": sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)),
        "job_path": job_evidence(runs["clipscale"]),
    }  # fmt: skip


def _measure(
    spec: RunSpec, work: Path, args: argparse.Namespace, env: dict[str, str], threads: int
) -> tuple[dict[str, list[dict[str, float]]], dict[str, Path]]:
    """Each path ``args.repeats`` times: its throughput per repeat, and its last run."""
    speeds: dict[str, list[dict[str, float]]] = {"clipscale": [], "plain": []}
    runs: dict[str, Path] = {}
    for r in range(args.repeats):
        # Alternating who goes first evens out drift (thermal, page cache, other load).
        for kind in ("clipscale", "plain") if r % 2 == 0 else ("plain", "clipscale"):
            root = work / f"repeat{r}"
            if kind == "clipscale":
                runs[kind] = run_clipscale(spec, root, env)
            else:
                runs[kind] = run_plain(spec, root, args.device, env, threads)
            log = (runs[kind] / "out.log").read_text()
            speeds[kind].append(steady_throughput(log, spec.point.train.global_batch_size, args.skip_logs))
            shutil.rmtree(runs[kind] / "checkpoints", ignore_errors=True)  # L/14's are GBs
    return speeds, runs


def _summary(repeats: list[dict[str, float]]) -> dict[str, Any]:
    per = [r["samples_per_s"] for r in repeats]
    wait = statistics.median(r["data_wait_fraction"] for r in repeats)
    # The best repeat is the headline: load from elsewhere only ever slows a run down.
    return {"samples_per_s": max(per), "median_samples_per_s": round(statistics.median(per), 2),
            "repeats_samples_per_s": per, "steps_timed": repeats[0]["steps_timed"],
            "data_wait_fraction": round(wait, 4)}  # fmt: skip


# ---------------------------------------------------------------- the whole run

_PROBE = (
    "import json, torch; c = torch.cuda.is_available(); "
    "print(json.dumps([c, c and torch.cuda.get_device_name()]))"
)


def child_env(device: str) -> dict[str, str]:
    # On CPU the GPUs are hidden: the job path picks CUDA by itself wherever it sees one.
    return {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}


def probe(device: str) -> tuple[str, str]:
    """(cuda or cpu, the device's name), asked in a child: the parent never initialises
    CUDA, whose context would hold GPU memory while the measured runs train."""
    out = subprocess.run([sys.executable, "-c", _PROBE], env=child_env(device), capture_output=True,
                         text=True, check=True)  # fmt: skip
    cuda, name = json.loads(out.stdout.strip().splitlines()[-1])
    if device == "cuda" and not cuda:
        raise SystemExit("error: --device cuda, but torch sees no GPU")
    return ("cuda", name) if cuda and device != "cpu" else ("cpu", "cpu")


def _model_batch(text: str) -> tuple[str, int]:
    name, _, batch = text.partition(":")
    if not name or not batch.isdigit() or int(batch) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:BATCH (e.g. ViT-B-32:512)")
    return name, int(batch)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--models", nargs="+", type=_model_batch, metavar="NAME:BATCH",
                        help="models and their per-GPU batches")  # fmt: skip
    parser.add_argument("--precision", help="amp_bf16 on CUDA, fp32 on CPU by default")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (the plan rounds to whole quanta)")
    parser.add_argument("--repeats", type=int, help="runs per path; the best is the headline")
    parser.add_argument("--workers", type=int, help="data-loader workers per GPU")
    parser.add_argument("--skip-logs", type=int, default=3, help="log windows left out as warm-up")
    parser.add_argument("--gpu", default="h100", help="conf/gpu entry whose bf16 peak the MFU is against")
    for flag in FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", action="store_true", help=f"open_clip's {flag}")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "gpu_train.json")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary directory)")
    return parser.parse_args(argv)


def figures_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows (bench/table.py): each model's training speed through clipscale's job
    beside open_clip's trainer run directly on the same data, device and settings."""
    rows = []
    for model, m in r["models"].items():
        ours, plain = m["clipscale"]["samples_per_s"], m["plain"]["samples_per_s"]
        rows.append(figure(f"training speed, {model} on {r['device']}", ours, "samples/s",
                           f">= {r['target_ratio']:g} × the peer", ours / plain >= r["target_ratio"],
                           "open_clip's trainer run directly", plain,
                           note=f"MFU {m['clipscale']['mfu']}" if m["clipscale"].get("mfu") else
                           "no MFU on a CPU (no bf16 peak); a GPU run gives it"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.device, name = probe(args.device)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps < 8:
        raise SystemExit("error: --steps must be at least 8 (warm-up windows and a learning-rate warm-up)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="clipscale-gpu-bench-"))
    try:
        figures = _bench(work, args, name)
    except ClipscaleError as e:  # a model, GPU or setting the planner rejects
        raise SystemExit(f"error: {e}") from None
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    from scaling.files import write_atomic

    figures["figures"] = figures_of(figures)
    write_atomic(args.output, json.dumps(figures, indent=2) + "\n")
    print(f"figures: {args.output}")
    return 0


def _bench(work: Path, args: argparse.Namespace, device_name: str) -> dict[str, Any]:
    from scaling import toyworld
    from scaling.train import versions

    work.mkdir(parents=True, exist_ok=True)
    # Only for the pre-flight check of the point's shards: the trainer reads synthetic data.
    toyworld.write_world(work / "world", {"toy-1k": 1000})
    models = {}
    for name, batch in args.models:
        models[name] = bench_model(work, name, batch, args, child_env(args.device))
        print(_line(name, models[name]))
    return {
        "device": device_name, "device_kind": args.device, "gpu_config": args.gpu,
        "peak_tflops": next(iter(models.values()))["peak_tflops"], "versions": versions(),
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "target_ratio": TARGET_RATIO, "repeats": args.repeats, "skip_logs": args.skip_logs,
        "method": METHOD.format(skip=args.skip_logs), "models": models,
    }  # fmt: skip


METHOD = (
    "each path in a fresh process, repeats alternating which goes first; samples/s from the trainer's "
    "out.log: samples over step time (Batch (t) x steps) of the log windows after the first {skip}; "
    "best of the repeats (median beside it). MFU = samples/s x 6 x GMACs per sample / (GPUs x bf16 "
    "peak); null on CPU"
)


def _line(name: str, m: dict[str, Any]) -> str:
    a, b = m["clipscale"], m["plain"]
    mfu = "" if a["mfu"] is None else f", MFU {a['mfu']:.3f} vs {b['mfu']:.3f}"
    return (f"{name} batch {m['per_gpu_batch']} {m['precision']}: clipscale {a['samples_per_s']}/s, "
            f"plain {b['samples_per_s']}/s, ratio {m['ratio']:.3f}{mfu}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2], Path(sys.argv[3])))
    sys.exit(main())
