"""The Slurm side of dispatch: submitit job arrays, submitted held, found again by name.

Every batch is submitted through submitit's public ``executor.batch()`` (one array; a
batch of one is a plain job) with ``--hold``, under a job name that is its submission
token. Until the launcher has recorded the job id and released it, nothing can start: a
launcher killed in between leaves a held job that the next launch finds by name (one
``squeue``) and adopts and releases if submitit had put every task's pickle in place, or
cancels if not (the points are submitted again). Status is one ``sacct`` call for all
jobs of a sweep, and cancelling one ``scancel``.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from scaling.clock import db_time
from scaling.errors import ClipscaleError, first_line
from scaling.resources import Resources, SlurmSettings

TIMEOUT_S = 60
STATES = {
    "PENDING": "pending", "RUNNING": "running", "REQUEUED": "requeued", "REQUEUE_HOLD": "requeued",
    "REQUEUE_FED": "requeued", "RESIZING": "running", "SUSPENDED": "running", "COMPLETING": "running",
    "CONFIGURING": "running", "STAGE_OUT": "running", "SIGNALING": "running", "PREEMPTED": "requeued",
    "COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled", "TIMEOUT": "timeout",
    "OUT_OF_MEMORY": "out_of_memory", "NODE_FAIL": "node_fail", "BOOT_FAIL": "node_fail",
    "DEADLINE": "timeout", "REVOKED": "cancelled", "SPECIAL_EXIT": "failed",
}  # fmt: skip


@dataclass(frozen=True)
class TaskState:
    state: str  # one of STATES' values
    node: str | None
    started_at: datetime | None
    ended_at: datetime | None
    reason: str | None


def run(args: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> str:
    """A Slurm command's stdout; its failure as one line naming ``what`` was tried."""
    if shutil.which(args[0]) is None:
        raise ClipscaleError(f"cannot {what}: {args[0]} is not installed here (is this a Slurm login node?)")
    try:
        out = subprocess.run(
            list(args), capture_output=True, text=True, timeout=TIMEOUT_S, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        raise ClipscaleError(
            f"cannot {what}: {args[0]} did not answer in {TIMEOUT_S} s (Slurm down?)"
        ) from None
    if out.returncode != 0:
        message = first_line(out.stderr.strip() or out.stdout.strip() or f"exit code {out.returncode}")
        raise ClipscaleError(f"cannot {what}: {args[0]}: {message}")
    return out.stdout


# ---------------------------------------------------------------- checks before submitting


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    up: bool
    max_time_min: int | None  # None: no limit
    nodes: int
    cpus: int  # per node (the smallest node)
    mem_mb: int  # per node (the smallest node)
    gpus: int  # per node (the fewest)


def partitions() -> dict[str, Partition]:
    """The cluster's partitions from one ``sinfo`` call."""
    out = run(["sinfo", "-h", "-o", "%P|%a|%l|%D|%c|%m|%G"], "read the cluster's partitions")
    parts: dict[str, Partition] = {}
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 7:
            continue
        name, avail, limit, nodes, cpus, mem, gres = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        part = Partition(name, default, avail == "up", _minutes(limit), _int(nodes), _int(cpus), _int(mem),
                         _gpus(gres))  # fmt: skip
        old = parts.get(name)
        if old is not None:  # one line per node kind: keep what every node offers
            part = Partition(
                name, default, part.up and old.up, part.max_time_min, old.nodes + part.nodes,
                min(old.cpus, part.cpus), min(old.mem_mb, part.mem_mb), min(old.gpus, part.gpus),
            )  # fmt: skip
        parts[name] = part
    return parts


def _int(text: str) -> int:
    m = re.match(r"\d+", text)
    return int(m.group()) if m else 0


def _gpus(gres: str) -> int:
    m = re.search(r"gpu(?::[^:,(]+)?:(\d+)", gres)
    return int(m.group(1)) if m else 0


def _minutes(limit: str) -> int | None:
    """A Slurm time limit in whole minutes (seconds round up); None for no limit. Slurm's
    forms: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``: with days, the first
    field after the dash is hours; without, a lone field is minutes."""
    if limit.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, dash, rest = limit.strip().rpartition("-")
    fields = [int(p) for p in rest.split(":")]
    if dash:
        h, m, s = [*fields, 0, 0][:3]
    elif len(fields) == 3:
        h, m, s = fields
    else:
        h, (m, s) = 0, [*fields, 0][:2]
    return int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)


def check_resources(classes: Sequence[Resources], parts: Mapping[str, Partition]) -> None:
    """Every resource class fits its partition; the first that does not is the error."""
    default = next((p for p in parts.values() if p.default), None)
    for r in classes:
        part = parts.get(r.partition) if r.partition else default
        if part is None:
            known = ", ".join(sorted(parts)) or "none"
            wanted = f"partition {r.partition!r}" if r.partition else "a default partition"
            raise ClipscaleError(f"the cluster has no {wanted} (partitions: {known}; set cluster.partition)")
        where = f"partition {part.name}"
        if not part.up:
            raise ClipscaleError(f"{where} is not up")
        if part.max_time_min is not None and r.time_min > part.max_time_min:
            raise ClipscaleError(
                f"a job asks for {r.time_min} min but {where} allows {part.max_time_min} "
                "(set cluster.time_limit_min to it: longer runs are requeued from checkpoints)"
            )
        if r.nodes > part.nodes:
            raise ClipscaleError(f"a job asks for {r.nodes} nodes but {where} has {part.nodes}")
        if r.cpus_per_task * r.tasks_per_node > part.cpus:
            raise ClipscaleError(
                f"a job asks for {r.cpus_per_task * r.tasks_per_node} CPUs per node but the nodes of {where} "
                f"have {part.cpus} (cluster.cpus_per_gpu)"
            )
        if r.mem_gb * 1024 > part.mem_mb:
            raise ClipscaleError(
                f"a job asks for {r.mem_gb} GB per node but the nodes of {where} have {part.mem_mb} MB "
                "(cluster.mem_gb_per_gpu)"
            )
        if r.gpus_per_node > part.gpus:
            raise ClipscaleError(
                f"a job asks for {r.gpus_per_node} GPUs per node but the nodes of {where} have {part.gpus} "
                "(cluster.gpus_per_node; 0 for CPU-only nodes)"
            )


@dataclass(frozen=True)
class Limits:
    """What the cluster lets this user submit, read from it before a launch."""

    max_array_size: int | None  # MaxArraySize: tasks one array may hold
    max_submit: int | None  # jobs (each array task counts) the user may have queued at once
    queued: int  # the user's jobs queued or running now
    source: str  # where max_submit comes from

    @property
    def allowance(self) -> int | None:
        return None if self.max_submit is None else max(0, self.max_submit - self.queued)

    def describe(self) -> str:
        size = f"MaxArraySize {self.max_array_size}" if self.max_array_size else "no MaxArraySize"
        submit = "no submit limit"
        if self.max_submit is not None:
            submit = f"{self.max_submit} jobs per user ({self.source}), {self.queued} queued"
        return f"cluster limits: {size}; {submit}"


def limits(qos: str | None) -> Limits:
    """MaxArraySize from the cluster's config, and the submit limit of this user's
    association or QOS (the lower), with what the user has queued now."""
    config = run(["scontrol", "show", "config"], "read the cluster's configuration")
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.MULTILINE)
    user = getpass.getuser()
    found: list[tuple[int, str]] = []
    try:
        show = ["sacctmgr", "-n", "-P", "show"]
        assoc = run([*show, "assoc", "where", f"user={user}", "format=MaxSubmitJobs,QOS"], "read your limits")
        qos_rows = run([*show, "qos", "format=Name,MaxSubmitJobsPerUser"], "read the QOS limits")
    except ClipscaleError:
        assoc = qos_rows = ""  # without accounting there are no limits to read (nor to enforce)
    names = {qos} if qos else set()
    for line in assoc.splitlines():
        limit, _, allowed = line.partition("|")
        if limit.strip().isdigit():
            found.append((int(limit), f"association of {user}"))
        if not qos:
            names.update(n for n in allowed.split(",")[:1] if n)
    for line in qos_rows.splitlines():
        name, _, limit = line.partition("|")
        if name in (names or {"normal"}) and limit.strip().isdigit():
            found.append((int(limit), f"QOS {name}"))
    queued = len(run(["squeue", "-h", "-r", "-u", user, "-o", "%i"], "count your queued jobs").split())
    low = min(found) if found else (None, "")
    return Limits(int(m.group(1)) if m else None, low[0], queued, low[1])


# ---------------------------------------------------------------- submitting


def executor_parameters(
    r: Resources, s: SlurmSettings, name: str, after: str | None = None
) -> dict[str, Any]:
    """submitit's Slurm parameters for one resource class: never a hand-written script.
    ``after`` is a Slurm dependency; a job whose dependency can no longer be met (its
    training or first stage failed) is cancelled by Slurm rather than left pending."""
    extra: dict[str, Any] = dict(r.additional_parameters)
    extra["hold"] = True
    if after:
        extra["dependency"] = after
        extra["kill_on_invalid_dep"] = "yes"
    params: dict[str, Any] = {
        "job_name": name,
        "nodes": r.nodes,
        "ntasks_per_node": r.tasks_per_node,
        "cpus_per_task": r.cpus_per_task,
        "mem": f"{r.mem_gb}GB",
        "time": r.time_min,
        "array_parallelism": s.array_parallelism,
        "signal_delay_s": s.signal_delay_s,
        "additional_parameters": extra,
    }
    if r.gpus_per_node:
        params["gpus_per_node"] = r.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(r, key):
            params[key] = getattr(r, key)
    return params


def submit_held(folder: Path, jobs: Sequence[Any], params: Mapping[str, Any], max_requeues: int) -> str:
    """Submit the jobs held, as one array (a plain job if there is one); its job id."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    executor.update_parameters(**params)
    try:
        # submitit also prints sbatch's complaint; it is in the error we raise, once.
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            submitted = [executor.submit(job) for job in jobs]
    except (submitit.core.utils.FailedJobError, OSError, subprocess.SubprocessError) as e:
        raise ClipscaleError(f"sbatch refused the array: {first_line(str(e).strip())}") from None
    return str(submitted[0].job_id).split("_")[0]


def task_id(job_id: str, index: int, size: int) -> str:
    """Task ``index`` of a submission: ``123_4`` in an array, ``123`` for a single job."""
    return job_id if size == 1 else f"{job_id}_{index}"


def complete(folder: Path, job_id: str, size: int) -> bool:
    """Whether every task's pickle is where submitit's task reads it (it moves them there
    right after sbatch: a launcher killed in between leaves them out)."""
    from submitit.core.utils import JobPaths

    return all(
        JobPaths(folder, job_id=task_id(job_id, i, size)).submitted_pickle.exists() for i in range(size)
    )


def log_path(folder: Path, job_id: str, index: int, size: int) -> Path:
    """Where the first task (rank 0) of a submission's task ``index`` writes its stderr."""
    from submitit.core.utils import JobPaths

    return JobPaths(folder, job_id=task_id(job_id, index, size), task_id=0).stderr


def find_by_name(names: Sequence[str]) -> dict[str, str]:
    """Array job ids of queued jobs with these names (a held array is always queued)."""
    if not names:
        return {}
    out = run(["squeue", "-h", "-r", "--name", ",".join(names), "-o", "%F|%j"], "look up submitted arrays")
    found: dict[str, str] = {}
    for line in out.splitlines():
        job, _, name = line.strip().partition("|")
        if job and name in names:
            found[name] = job
    return found


def release(job_ids: Sequence[str]) -> None:
    if job_ids:
        try:
            run(["scontrol", "release", ",".join(job_ids)], "release the submitted arrays")
        except ClipscaleError as e:
            # Releasing twice (a rerun after a kill) is not an error worth stopping for.
            if "already" not in str(e) and "not held" not in str(e).lower():
                raise


def cancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        run(["scancel", *job_ids], "cancel jobs")


# ---------------------------------------------------------------- status


def task_states(array_ids: Sequence[str]) -> dict[str, TaskState]:
    """The state of every task of these arrays, by task id ``ARRAY_INDEX``: one sacct call."""
    if not array_ids:
        return {}
    # submitit's own watcher asks sacct for JobID, State and NodeList only; the store needs
    # start and end times, the reason and the exit code too, so this is the one sacct call.
    # TZ=UTC: sacct prints naive times in its own time zone, and the store keeps UTC.
    out = run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(array_ids), "-o",
         "JobID,State,NodeList,Start,End,Reason,ExitCode"],
        "read job states from sacct (is accounting, slurmdbd, running?)",
        env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    return parse_sacct(out)


def parse_sacct(text: str) -> dict[str, TaskState]:
    """Task states from sacct lines. A task's own line wins over the line of the array's
    never-started rest (``123_[0-3%2]``), which still lists tasks that have run since."""
    states: dict[str, TaskState] = {}
    ranged: dict[str, TaskState] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 7:
            continue
        job, state, node, start, end, reason, code = fields[:7]
        word = state.split()[0] if state else ""
        mapped = STATES.get(word.rstrip("+"), "failed")
        why = None if reason in ("", "None") else reason
        if mapped in ("failed", "out_of_memory", "node_fail", "timeout") and code not in ("", "0:0"):
            why = f"{word}, exit code {code}" + (f" ({why})" if why else "")
        value = TaskState(
            mapped, node if node not in ("", "None assigned") else None, _time(start), _time(end), why
        )
        target = ranged if "[" in job else states
        for task in _tasks(job):
            target[task] = value
    return {**ranged, **states}


def _tasks(job: str) -> list[str]:
    """``123_4`` -> [``123_4``]; a pending range ``123_[0-3,7%2]`` -> every task in it."""
    array, _, index = job.partition("_")
    if not index.startswith("["):
        return [job]
    out = []
    for part in index.strip("[]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        out += [f"{array}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


def _time(text: str) -> datetime | None:
    # sacct prints the cluster's local time, without a zone; the store keeps UTC.
    return db_time(text, naive_is_local=True)
