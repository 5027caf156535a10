"""Dispatch at scale on the one-node dev Slurm, with Hydra's submitit launcher beside it.

1. Launch: plan + submit a 1,000-point sweep with ``scaling launch``; the same 1,000 values
   swept by a trivial Hydra app (``bench/hydra_peer``) with ``-m hydra/launcher=submitit_slurm``
   on the same partition and resources. Both count their sbatch calls through PATH shims.
2. One status poll (``reconcile``, what ``scaling status --watch`` repeats) at 1,000 and at
   10,000 points: its time, its sacct calls (shims), its loads of the sweep's attempts and
   the files it opens under the runs directory (``sys.addaudithook`` on "open", in process).
   The 10,000-point sweep is 2,000 points queued for real by ``scaling launch``, plus a
   history recorded through the store's own functions with the files a run leaves: 5,000
   succeeded, 1,000 failed, 100 whose evaluation jobs (real Slurm jobs standing in for
   them) ended since the last poll, 1,900 never submitted.
3. The poll before the fix (``scaling/dispatch/launch.py`` at BEFORE, loaded from git) on
   a copy of the same store, beside the poll as it is now.

Jobs stay queued because they are submitted with ``--begin=now+1day`` (the sweep's
``additional_parameters``, and the peer's): the node keeps running whatever else is queued.
Every job submitted here is cancelled at the end. Needs root (it starts
launchers/slurm-dev-cluster.sh if no dev cluster is up, and takes it down again). It queues
about 7,100 tasks; the dev cluster's MaxJobCount is 10,000 and ended jobs count for its
MinJobAge (300 s): run it at most every 5 minutes, or sbatch waits and launches look slow.

    .venv/bin/python bench/dispatch_bench.py   # writes bench/results/dispatch.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import types
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from figures import figure, machine  # noqa: E402

SCRIPT = REPO / "launchers" / "slurm-dev-cluster.sh"
OUT = REPO / "bench" / "results" / "dispatch.json"
HYDRA_APP = REPO / "bench" / "hydra_peer" / "app.py"
PEER = "hydra-submitit-launcher 1.2.0"
BEFORE = "a45f88f"  # the commit whose status poll loaded attempts twice
BEGIN = "now+1day"  # queued, never started: the node stays free for everyone else
REAL_SQUEUE = shutil.which("squeue") or "squeue"
FAKE_JOBS = 67_100_000  # above Slurm's MaxJobId: the job ids of a recorded history, never real

SWEEP = """\
defaults:
  - gpu: a100
  - cluster: slurm
  - _self_
name: {name}
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
  slurm: {{partition: debug, gpus_per_node: 0, cpus_per_gpu: 1, mem_gb_per_gpu: 1, time_limit_min: 60,
          additional_parameters: {{begin: "{begin}"}}}}
"""


# ---------------------------------------------------------------- counting


def shim(folder: Path, log: Path) -> dict[str, str]:
    """Slurm command wrappers, first on PATH, that log each call and when it returned."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in ("sbatch", "sacct", "squeue", "scontrol", "sinfo", "sacctmgr", "scancel"):
        real = shutil.which(tool)
        assert real, f"{tool} not found: is Slurm installed?"
        (folder / tool).write_text(f'#!/bin/sh\ns=$(date +%s.%N)\n{real} "$@"\nrc=$?\n'
                                   f'echo "{tool} $(date +%s.%N) $s $*" >> {log}\nexit $rc\n')  # fmt: skip
        (folder / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def calls(log: Path) -> dict[str, int]:
    """Calls per Slurm command since the last look (the log is emptied)."""
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return dict(Counter(line.split()[0] for line in lines))


def times(log: Path, tool: str) -> list[tuple[float, float]]:
    """(called, returned) of each call of ``tool`` logged so far."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [(float(f[2]), float(f[1])) for f in (line.split() for line in lines) if f[0] == tool]


_OPENS: list[str] | None = None  # paths opened while a poll is measured


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _OPENS is not None and isinstance(args[0], str | bytes | os.PathLike):
        _OPENS.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # an audit hook cannot be removed: it records only inside measured()


@contextmanager
def measured(module: types.ModuleType, log: Path) -> Iterator[dict[str, Any]]:
    """Time, sacct calls, attempt loads and file opens of what runs inside; ``module`` is the
    dispatch code measured (its ``attempts_of`` is counted)."""
    global _OPENS
    loads = [0]
    real = module.attempts_of

    def counted(*args: Any) -> Any:
        loads[0] += 1
        return real(*args)

    out: dict[str, Any] = {}
    calls(log)
    module.attempts_of = counted
    _OPENS = []
    t = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - t
        out["paths"], _OPENS = _OPENS, None
        module.attempts_of = real
        out["attempt_loads"] = loads[0]
        out["slurm_calls"] = calls(log)


def opened(paths: list[str], runs: Path) -> dict[str, Any]:
    """Opens of files under the runs directory (jobs/ is ``runs/_jobs``), by file name."""
    mine = [Path(p) for p in paths if Path(p).is_relative_to(runs)]
    kinds = Counter("_jobs/*" if p.relative_to(runs).parts[0] == "_jobs" else p.name for p in mine)
    outcomes = Counter(p for p in mine if p.name == "outcome.json")
    return {"total": len(mine), "by_file": dict(kinds), "outcome_json_files": len(outcomes),
            "max_opens_of_one_outcome_json": max(outcomes.values(), default=0)}  # fmt: skip


def poll(module: types.ModuleType, plan: Any, engine: Any, log: Path, runs: Path) -> dict[str, Any]:
    """One status poll of ``module``'s reconcile, measured."""
    with measured(module, log) as m:
        summary = module.reconcile(plan, engine)
    m["opens"] = opened(m.pop("paths"), runs)
    m["s"] = round(m["s"], 3)
    failures = hashlib.sha256(repr(sorted(summary.failures)).encode()).hexdigest()[:12]
    m["summary"] = {"counts": summary.counts, "ingested": summary.ingested, "active": summary.active,
                    "done": summary.done, "spent": summary.spent, "failures": len(summary.failures),
                    "failures_sha": failures}  # fmt: skip
    return m


def polls(modules: dict[str, types.ModuleType], engines: dict[str, Any], plan: Any, log: Path, n: int = 3
          ) -> dict[str, Any]:  # fmt: skip
    """Each module's first poll (it settles what ended since the last), then the best of
    ``n`` more, the modules taking turns so that both see the same machine."""
    runs = Path(plan.sweep.runs_root)
    first = {label: poll(m, plan, engines[label], log, runs) for label, m in modules.items()}
    steady: dict[str, list[dict[str, Any]]] = {label: [] for label in modules}
    for _ in range(n):
        for label, m in modules.items():
            steady[label].append(poll(m, plan, engines[label], log, runs))
    return {label: {"first": first[label], "steady": {**min(steady[label], key=lambda m: m["s"]),
                                                      "s_all": [m["s"] for m in steady[label]]}}
            for label in modules}  # fmt: skip


def before_module() -> types.ModuleType | None:
    """``scaling/dispatch/launch.py`` as it was at BEFORE, importable beside today's."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE}:scaling/dispatch/launch.py"],
                         capture_output=True, text=True)  # fmt: skip
    if src.returncode != 0:
        return None
    name = "scaling.dispatch._launch_before"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(src.stdout, f"{BEFORE}:scaling/dispatch/launch.py", "exec"), module.__dict__)
    return module


# ---------------------------------------------------------------- the cluster


def scancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True)


def submitted_jobs(db: Path) -> list[str]:
    """Every real job id a benchmark store recorded, to cancel before the bench ends."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        jobs = [j for (j,) in conn.execute("SELECT DISTINCT job_id FROM submissions WHERE job_id > ''")]
    return [j for j in jobs if int(j) < FAKE_JOBS]


def queued(name: str) -> int:
    """Tasks queued under a job name (the real squeue, not the shim: not counted)."""
    out = subprocess.run([REAL_SQUEUE, "-h", "-r", "-n", name, "-o", "%i"], capture_output=True, text=True)
    return len(out.stdout.split())


def stand_in_jobs(tasks: int) -> str:
    """A real array of jobs that end at once, at the head of the queue: sacct's record of them
    stands in for evaluation jobs that ended since the last poll."""
    out = subprocess.run(["sbatch", "--parsable", f"--array=0-{tasks - 1}", "-c", "1", "--mem=16M", "-t", "1",
                          "-J", "bench-stand-in", "-o", "/dev/null", "--priority=TOP", "--wrap=true"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip().split(";")[0]


def wait_ended(job: str, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"stand-in jobs {job} still queued after {timeout_s} s"
        time.sleep(2)


# ---------------------------------------------------------------- 1,000 points: ours and the peer


def sweep_file(tmp: Path, name: str, file: str, samples: list[int]) -> Path:
    path = tmp / f"{file}.yaml"
    text = SWEEP.format(name=name, root=tmp / "world", runs=tmp / f"runs-{name}", begin=BEGIN,
                        samples=", ".join(map(str, samples)))  # fmt: skip
    path.write_text(text)
    return path


def launch_1k(tmp: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """``scaling launch`` of the 1,000-point sweep, then ``scaling status``, as CLI calls."""
    sweep = sweep_file(tmp, "bench1000", "bench1000", [4096 * (i + 1) for i in range(250)])
    db = f"sqlite:///{tmp / 'bench1000.db'}"
    scaling = [sys.executable, "-m", "scaling.cli"]
    subprocess.run([*scaling, "plan", f"sweep={sweep}"], check=True, env=env, capture_output=True)
    calls(log)
    t = time.perf_counter()
    out = subprocess.run([*scaling, "launch", f"sweep={sweep}", "--db", db], env=env, capture_output=True,
                         text=True)  # fmt: skip
    launch_s = time.perf_counter() - t
    assert out.returncode == 0, out.stderr
    tasks = sum(queued(name) for name in _names(tmp / "bench1000.db"))
    result = {"launch_s": round(launch_s, 2), "launch_output": out.stdout.strip().splitlines()[0],
              "launch_calls": calls(log), "tasks_queued": tasks}  # fmt: skip
    t = time.perf_counter()
    out = subprocess.run([*scaling, "status", f"sweep={sweep}", "--db", db, "--no-tracking"], env=env,
                         capture_output=True, text=True)  # fmt: skip
    result["status_cli_s"] = round(time.perf_counter() - t, 2)
    assert out.returncode == 0, out.stderr
    result["status_cli_calls"] = calls(log)
    return {**result, "sweep": str(sweep), "db": db}


def _names(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [t for (t,) in conn.execute("SELECT token FROM submissions WHERE state = 'released'")]


def hydra_peer(tmp: Path, env: dict[str, str], log: Path, res: Any, n: int = 1000) -> dict[str, Any]:
    """The same n values swept with ``-m hydra/launcher=submitit_slurm`` on the same partition
    and resources (our first resource class). Its ``-m`` call submits, then waits for every
    result, so what is timed is the call until squeue shows all n tasks queued; the call is
    then stopped and its array cancelled."""
    name = f"bench-hydra-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, str(HYDRA_APP), "-m", "hydra/launcher=submitit_slurm",
            f"hydra.launcher.partition={res.partition}", f"hydra.launcher.cpus_per_task={res.cpus_per_task}",
            f"hydra.launcher.mem_gb={res.mem_gb}", f"hydra.launcher.timeout_min={res.time_min}",
            f"hydra.launcher.nodes={res.nodes}", f"hydra.launcher.tasks_per_node={res.tasks_per_node}",
            f"hydra.launcher.name={name}", f"+hydra.launcher.additional_parameters={{begin:'{BEGIN}'}}",
            f"hydra.sweep.dir={tmp / 'hydra'}", f"out_dir={tmp / 'hydra-out'}",
            f"x=range(0,{n})"]  # fmt: skip
    (tmp / "hydra-out").mkdir()
    calls(log)
    t0 = time.time()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    seen, at = 0, None
    while proc.poll() is None and time.time() - t0 < 600:
        if not times(log, "sbatch"):  # asking squeue before would load the controller it waits on
            time.sleep(0.1)
            continue
        seen = queued(name)
        if seen >= n:
            at = time.time() - t0
            break
        time.sleep(0.2)
    sbatch = times(log, "sbatch")
    still_waiting = proc.poll() is None
    if still_waiting:
        proc.terminate()  # the -m call would wait for n results of jobs that may not start for a day
        proc.wait(30)
    err = proc.stderr.read() if proc.stderr else ""
    counted = calls(log)  # the peer's calls only, not the scancel below
    jobs = subprocess.run([REAL_SQUEUE, "-h", "-n", name, "-o", "%F"], capture_output=True, text=True)
    scancel(sorted(set(jobs.stdout.split())))
    assert at is not None, f"hydra queued {seen} of {n} tasks; stderr: {err[-2000:]}"
    return {
        "queued_s": round(at, 2),
        "sbatch_called_s": round(sbatch[0][0] - t0, 2) if sbatch else None,
        "sbatch_returned_s": round(sbatch[-1][1] - t0, 2) if sbatch else None,
        "calls_until_stopped": counted,
        "tasks_queued": seen,
        "m_call_returned": not still_waiting,
        "resources": {"partition": res.partition, "cpus_per_task": res.cpus_per_task, "mem_gb": res.mem_gb,
                      "timeout_min": res.time_min, "nodes": res.nodes, "tasks_per_node": res.tasks_per_node},
    }  # fmt: skip


# ---------------------------------------------------------------- 10,000 points


def build_10k(tmp: Path, env: dict[str, str], log: Path, stand_in: str) -> dict[str, Any]:
    """The 10,000-point sweep's store and run directories (see the module's docstring)."""
    from scaling.plan import plan

    samples = [4096 * (i + 1) for i in range(2500)]
    full = plan(str(sweep_file(tmp, "bench10k", "bench10k", samples)), [])
    # The first 500 sample sizes: 2,000 points, launched for real under the same sweep name.
    part = sweep_file(tmp, "bench10k", "bench10k-queued", samples[:500])
    db = tmp / "bench10k.db"
    calls(log)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "launch", f"sweep={part}", "--db",
                          f"sqlite:///{db}"], env=env, capture_output=True, text=True)  # fmt: skip
    launch_s = time.perf_counter() - t
    assert out.returncode == 0, out.stderr
    launch = {"launch_s": round(launch_s, 2), "output": out.stdout.strip().splitlines()[0],
              "calls": calls(log)}  # fmt: skip
    from scaling.store import connect, record_points
    from scaling.sync import planned_rows

    engine = connect(f"sqlite:///{db}")
    record_points(engine, full.sweep.name, planned_rows(full), new_only=True)  # as its first poll does
    launched = {pid for pid in _attempt_points(db)}
    rest = [p for p in full.points if p.point.id not in launched]
    ending = [p for p in rest if p.point.train.gpus == 1][:100]
    others = [p for p in rest if p not in ending]
    succeeded, failed, never = others[:5000], others[5000:6000], others[6000:]
    history(full, engine, succeeded, "succeeded")
    history(full, engine, failed, "failed")
    history(full, engine, ending, "ending", stand_in)
    engine.dispose()
    groups = {"queued (scaling launch)": len(launched), "succeeded": len(succeeded), "failed": len(failed),
              "evaluation ended since the last poll": len(ending), "never submitted": len(never)}  # fmt: skip
    return {"plan": full, "db": db, "launch": launch, "groups": groups}


def _attempt_points(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [p for (p,) in conn.execute("SELECT DISTINCT point_id FROM attempts")]


def history(plan: Any, engine: Any, points: list[Any], kind: str, eval_job: str | None = None) -> None:
    """Record what became of ``points`` as a launch and its polls would have, and write the
    files their runs would have left: ``succeeded`` (trained, evaluated), ``failed`` (its
    training failed; its evaluation never ran), ``ending`` (trained; its evaluation, job
    ``eval_job``, has ended since the last poll: 80 % succeeded, the rest failed)."""
    from scaling.clock import db_now
    from scaling.dispatch.backends import SlurmBackend
    from scaling.store.attempts import update_attempts

    backend = SlurmBackend(plan)
    runs = Path(plan.sweep.runs_root)
    start = db_now()
    for res, ids in backend.batches(points):
        train = _submit(plan, engine, ids, res, "train", None, str(FAKE_JOBS))
        update_attempts(engine, _ended(engine, train, "failed" if kind == "failed" else "trained", start))
        for eres, eids in backend.eval_batches(ids):
            ev = _submit(plan, engine, eids, eres, "eval", train, eval_job or str(FAKE_JOBS + 1))
            if kind == "succeeded":
                update_attempts(engine, _ended(engine, ev, "succeeded", start))
            elif kind == "failed":  # Slurm cancels it (kill_on_invalid_dep); the poll voids it
                update_attempts(engine, _ended(engine, ev, "void", start))
    for i, p in enumerate(points):
        status = "failed" if kind == "failed" or (kind == "ending" and i % 5 == 4) else "succeeded"
        write_run(runs / p.point.id, p, status, trained=kind != "failed")


def _submit(plan: Any, engine: Any, ids: tuple[str, ...], res: dict[str, Any], stage: str, after: str | None,
            job: str) -> str:  # fmt: skip
    from scaling.dispatch.backends import jobs_root
    from scaling.store.attempts import NewSubmission, add_submissions, locked, set_submission

    token = f"clipscale-bench-{uuid.uuid4().hex[:12]}"
    b = NewSubmission(token, "slurm", ids, str(jobs_root(plan) / token), res, stage, after)
    locked(engine, plan.sweep.name, lambda conn: add_submissions(conn, plan.sweep.name, [b], "bench 0 0"))
    set_submission(engine, token, "released", job, lambda i: f"{job}_{i}")
    return token


def _ended(engine: Any, token: str, state: str, start: Any) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from scaling.store.models import Attempt

    with engine.connect() as conn:
        rows = conn.execute(sa.select(Attempt.point_id, Attempt.key).where(Attempt.submission == token)).all()
    reason = "FAILED, exit code 1:0" if state == "failed" else None
    return [{"point_id": p, "key": k, "state": state, "node": "vm", "started_at": start, "ended_at": start,
             "exit_reason": reason} for p, k in rows]  # fmt: skip


def write_run(directory: Path, p: Any, status: str, trained: bool) -> None:
    """What a run leaves in its directory: point.json, trained.json, outcome.json."""
    from scaling.clock import stamp
    from scaling.outcome import POINT_FILE, Outcome, Trained, write_outcome, write_trained

    directory.mkdir(parents=True, exist_ok=True)
    (directory / POINT_FILE).write_text(json.dumps(asdict(p.point), indent=2, sort_keys=True) + "\n")
    seen, epochs, ranks, now = p.point.samples_seen, p.point.train.epochs or 1, p.point.train.gpus, stamp()
    if trained:
        write_trained(directory, Trained(p.point.id, seen, epochs, "checkpoints/epoch_1.pt", 1.0, 100.0, None,
                                         ranks, started_at=now, finished_at=now))  # fmt: skip
    ok = status == "succeeded"
    metrics = {"toy_shapes": {"acc1": 0.5}} if ok else {}
    stage = "" if ok else ("eval" if trained else "train")
    error = None if ok else "RuntimeError: bench"
    write_outcome(directory, Outcome(p.point.id, status, seen if trained else None, seen, epochs, 1.0, 1.0,
                                     100.0, metrics, ranks=ranks, stage=stage, error=error, started_at=now,
                                     finished_at=now))  # fmt: skip


def polls_10k(built: dict[str, Any], log: Path, modules: dict[str, types.ModuleType]) -> dict[str, Any]:
    """Each module's polls, each on its own copy of the built store."""
    from scaling.store import connect

    db = built["db"]
    engines = {}
    for label in modules:
        copy = db.with_name(f"{db.stem}-{label}.db")
        with sqlite3.connect(db) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        engines[label] = connect(f"sqlite:///{copy}")
    out = polls(modules, engines, built["plan"], log)
    for engine in engines.values():
        engine.dispose()
    if len(modules) > 1:  # the fix changes no outcome: the same summaries, the same store afterwards
        stores = {stored(db.with_name(f"{db.stem}-{label}.db")) for label in modules}
        summaries = {json.dumps([p["first"]["summary"], p["steady"]["summary"]], sort_keys=True)
                     for p in out.values()}  # fmt: skip
        out["same_as_before"] = {"summaries": len(summaries) == 1, "store": len(stores) == 1}
    return out


def stored(db: Path) -> str:
    """A digest of what polls write: attempts, point states, metrics (not when they wrote it)."""
    queries = ("SELECT point_id, key, state, node, started_at, ended_at, exit_reason, log_path FROM attempts"
               " ORDER BY id", "SELECT id, status, error FROM points ORDER BY id",
               "SELECT point_id, dataset, metric, value FROM metrics ORDER BY 1, 2, 3")  # fmt: skip
    with sqlite3.connect(db) as conn:
        return hashlib.sha256(repr([conn.execute(q).fetchall() for q in queries]).encode()).hexdigest()


def polls_1k(one_k: dict[str, Any], log: Path, modules: dict[str, types.ModuleType]) -> dict[str, Any]:
    from scaling.plan import plan
    from scaling.store import connect

    engine = connect(one_k["db"])  # the store does not change: every pending job stays pending
    out = polls(modules, {label: engine for label in modules}, plan(one_k["sweep"], []), log)
    engine.dispose()
    return out


# ---------------------------------------------------------------- figures


def figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    built = r["build_10000"]["launch"]
    return [
        *launch_figures(r["launch_1000"], r["hydra_peer"]),
        *poll_figures(r["poll_1000"], "1,000", 1.0, "steady"),
        *poll_figures(r["poll_10000"], "10,000", 3.0, "steady"),
        *poll_figures(r["poll_10000"], "10,000", 3.0, "first"),
        figure(
            "launch 2,000 points into the 10,000-point sweep", built["launch_s"], "s", note=built["output"]
        ),
    ]


def at(value: Any, *path: str) -> Any:
    """``value[path[0]][path[1]]...``, None where a key is missing (no "before" measured)."""
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def launch_figures(ours: dict[str, Any], peer: dict[str, Any] | None) -> list[dict[str, Any]]:
    sbatch = ours["launch_calls"].get("sbatch", 0)
    return [
        figure("launch 1,000 points: wall time until all are queued", ours["launch_s"], "s", "< 10 s",
               ours["launch_s"] < 10, PEER, at(peer, "queued_s"),
               note=f"ours: `scaling launch` until it returns (plan, validate, record, submit held, "
                    f"release), {ours['tasks_queued']} tasks queued: each point's training and its "
                    "evaluation. Peer: its `-m hydra/launcher=submitit_slurm` call until squeue shows its "
                    f"1,000 tasks (its sbatch returned at {at(peer, 'sbatch_returned_s')} s); that call does "
                    "not return then but waits for the 1,000 results (stopped here, its array cancelled)"),
        figure("sbatch calls to launch 1,000 points", sbatch, "calls",
               "1 per job array: 2 resource classes, each with its evaluation array", sbatch <= 4, PEER,
               at(peer, "calls_until_stopped", "sbatch"),
               note="the peer submits one array of one resource class, and no evaluations"),
    ]  # fmt: skip


def poll_figures(polls: dict[str, Any], label: str, limit: float, which: str) -> list[dict[str, Any]]:
    """Time, sacct calls, attempt loads and file opens of one status poll: ``steady`` (best
    of 3), or the ``first``, which settles and ingests the evaluations that ended."""
    now, was = polls["after"][which], at(polls, "before", which)
    name = f"{label} points" + (", settling 100 ended evaluations" if which == "first" else "")
    sacct = now["slurm_calls"].get("sacct", 0)
    most = now["opens"]["max_opens_of_one_outcome_json"]
    note = f"best of {now.get('s_all')}"
    if which == "first":
        note = f"ingests {now['summary']['ingested']} outcomes; same as before: {at(polls, 'same_as_before')}"
    return [
        figure(f"status poll, {name} (reconcile in process)", now["s"], "s", f"< {limit:g} s",
               now["s"] < limit, before=at(was, "s"), note=note),
        figure(f"sacct calls per status poll, {name}", sacct, "calls", "1", sacct == 1,
               before=at(was, "slurm_calls", "sacct")),
        figure(f"loads of the sweep's attempts per status poll, {name}", now["attempt_loads"], "loads", "1",
               now["attempt_loads"] == 1, before=at(was, "attempt_loads")),
        figure(f"files opened under runs/ per status poll, {name}", now["opens"]["total"], "opens",
               before=at(was, "opens", "total"),
               note=f"by file: {now['opens']['by_file']}; before: {at(was, 'opens', 'by_file')}"),
        figure(f"most opens of one outcome.json in a status poll, {name}", most, "opens", "1", most <= 1,
               before=at(was, "opens", "max_opens_of_one_outcome_json")),
    ]  # fmt: skip


# ---------------------------------------------------------------- main


def say(what: str, value: Any) -> None:
    print(f"{what}: {json.dumps(value, default=str)}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-peer", action="store_true", help="Skip the Hydra peer (trying the bench out).")
    args = parser.parse_args()
    started_cluster = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode != 0
    if started_cluster:
        subprocess.run([str(SCRIPT), "up"], check=True, capture_output=True)
    tmp = Path(tempfile.mkdtemp(prefix="clipscale-bench-"))
    stand_in = stand_in_jobs(100)
    try:
        from scaling import toyworld
        from scaling.plan import plan
        from scaling.resources import resources, slurm_settings

        toyworld.write_world(tmp / "world", {"toy-4k": 4000})
        log = tmp / "calls.log"
        env = {**shim(tmp / "shim", log), "CLIPSCALE_CACHE_DIR": str(tmp / "cache")}
        os.environ.update({"PATH": env["PATH"], "CLIPSCALE_CACHE_DIR": env["CLIPSCALE_CACHE_DIR"]})
        # The module that polls (``reconcile``), whose ``attempts_of`` ``measured`` counts.
        after = importlib.import_module("scaling.dispatch.status")
        modules = {"after": after}
        if (old := before_module()) is not None:
            modules = {"before": old, **modules}
        result: dict[str, Any] = {"before": BEFORE if "before" in modules else None}
        result["launch_1000"] = launch_1k(tmp, env, log)
        p1 = plan(result["launch_1000"]["sweep"], [])
        res = resources(p1.points[0], slurm_settings(p1.sweep.cluster))
        say("launch 1,000", result["launch_1000"])
        result["hydra_peer"] = None if args.no_peer else hydra_peer(tmp, env, log, res)
        say("hydra peer", result["hydra_peer"])
        result["poll_1000"] = polls_1k(result["launch_1000"], log, modules)
        say("poll 1,000", result["poll_1000"])
        scancel(submitted_jobs(tmp / "bench1000.db"))
        wait_ended(stand_in)
        built = build_10k(tmp, env, log, stand_in)
        result["build_10000"] = {k: v for k, v in built.items() if k not in ("plan", "db")}
        say("build 10,000", result["build_10000"])
        result["poll_10000"] = polls_10k(built, log, modules)
        data = {"machine": machine(), "figures": figures(result), "detail": result}
        out = OUT if result["hydra_peer"] else OUT.with_name("dispatch-no-peer.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(json.dumps(data["figures"], indent=2))
    finally:
        for db in tmp.glob("*.db"):
            scancel(submitted_jobs(db))
        scancel([stand_in])
        if started_cluster:
            subprocess.run([str(SCRIPT), "down"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
