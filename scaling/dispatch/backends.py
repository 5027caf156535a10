"""One interface over the two places points run: a Slurm cluster, or this machine."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from scaling.compute import cache_dir
from scaling.dispatch import local, slurm
from scaling.errors import ClipscaleError
from scaling.plan import Plan, PlannedPoint
from scaling.resources import Resources, SlurmSettings, eval_resources, job_arrays, resources, slurm_settings
from scaling.store.attempts import SubmissionInfo

# A task's state: (state, node, started_at, ended_at, reason), as slurm.TaskState has it.
State = slurm.TaskState
Batches = list[tuple[dict[str, Any], tuple[str, ...]]]  # (resources, point ids) per job array


@dataclass(frozen=True)
class Dep:
    """A task that must complete before another starts: task ``index`` of a submission
    (job ``job_id``), whose own id is ``task``."""

    folder: str
    job_id: str
    index: int
    task: str


class Backend(Protocol):
    name: str

    def validate(self, points: Sequence[PlannedPoint]) -> None: ...
    def allowance(self) -> int | None: ...  # jobs that may still be submitted (None: no limit)
    def limits(self) -> str | None: ...  # what was found of the cluster's limits, to say
    def batches(self, points: Sequence[PlannedPoint]) -> Batches: ...
    def eval_batches(self, point_ids: Sequence[str]) -> Batches: ...
    def submit(self, token: str, folder: Path, jobs: Sequence[Any], resources: Mapping[str, Any],
               after: Sequence[Sequence[Dep]]) -> str: ...  # fmt: skip
    def task_id(self, job_id: str, index: int, size: int) -> str: ...
    def settle(self, subs: Sequence[SubmissionInfo]) -> dict[str, str | None]: ...
    def start(self, subs: Sequence[SubmissionInfo]) -> list[str]: ...  # the tokens it had to void
    def discard(self, job_ids: Sequence[str]) -> None: ...
    def states(self, subs: Sequence[SubmissionInfo]) -> dict[tuple[str, int], State]: ...
    def cancel(self, sub: SubmissionInfo, indices: Sequence[int]) -> None: ...
    def log_path(self, sub: SubmissionInfo, index: int) -> Path: ...


class SlurmBackend:
    name = "slurm"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._limits: slurm.Limits | None = None

    @property
    def settings(self) -> SlurmSettings:
        # Only submitting needs them: following or cancelling jobs works under any cluster=.
        s = slurm_settings(self.plan.sweep.cluster)
        found = self._limits.max_array_size if self._limits else None
        # Arrays are cut to the cluster's own MaxArraySize where it is lower than the config's.
        return replace(s, max_array_size=min(s.max_array_size, found)) if found else s

    def validate(self, points: Sequence[PlannedPoint]) -> None:
        classes = {resources(p, self.settings) for p in points}
        for p in points:
            _check_epoch_length(p, resources(p, self.settings), self.settings)
        if classes:
            slurm.check_resources(sorted(classes, key=repr), slurm.partitions())
            self._limits = slurm.limits(self.settings.qos)

    def allowance(self) -> int | None:
        return self._limits.allowance if self._limits else None

    def limits(self) -> str | None:
        return self._limits.describe() if self._limits else None

    def batches(self, points: Sequence[PlannedPoint]) -> Batches:
        return [(asdict(a.resources), a.point_ids) for a in job_arrays(points, self.settings)]

    def eval_batches(self, point_ids: Sequence[str]) -> Batches:
        s, r = self.settings, asdict(eval_resources(self.settings))
        return [
            (r, tuple(point_ids[i : i + s.max_array_size]))
            for i in range(0, len(point_ids), s.max_array_size)
        ]

    def submit(self, token: str, folder: Path, jobs: Sequence[Any], resources: Mapping[str, Any],
               after: Sequence[Sequence[Dep]]) -> str:  # fmt: skip
        r = Resources(
            **{**resources, "additional_parameters": tuple(map(tuple, resources["additional_parameters"]))}
        )
        params = slurm.executor_parameters(r, self.settings, token, _dependency(after))
        return slurm.submit_held(folder, jobs, params, self.settings.max_requeues)

    def task_id(self, job_id: str, index: int, size: int) -> str:
        return slurm.task_id(job_id, index, size)

    def settle(self, subs: Sequence[SubmissionInfo]) -> dict[str, str | None]:
        found = slurm.find_by_name([s.token for s in subs])
        return {s.token: found.get(s.token) for s in subs}

    def start(self, subs: Sequence[SubmissionInfo]) -> list[str]:
        whole = [s for s in subs if s.job_id and slurm.complete(Path(s.folder), s.job_id, s.size)]
        broken = [s for s in subs if s not in whole]
        slurm.cancel([s.job_id for s in broken if s.job_id])
        slurm.release([s.job_id for s in whole if s.job_id])
        return [s.token for s in broken]

    def discard(self, job_ids: Sequence[str]) -> None:
        slurm.cancel(job_ids)

    def states(self, subs: Sequence[SubmissionInfo]) -> dict[tuple[str, int], State]:
        by_array = {s.job_id: s.token for s in subs if s.job_id}
        out = {}
        for task, state in slurm.task_states(list(by_array)).items():
            array, _, index = task.partition("_")
            if array in by_array and (index.isdigit() or not index):  # a single job has no index
                out[(by_array[array], int(index or 0))] = state
        return out

    def cancel(self, sub: SubmissionInfo, indices: Sequence[int]) -> None:
        if sub.job_id:
            slurm.cancel([self.task_id(sub.job_id, i, sub.size) for i in indices])

    def log_path(self, sub: SubmissionInfo, index: int) -> Path:
        return slurm.log_path(Path(sub.folder), sub.job_id or "", index, sub.size)


def _dependency(after: Sequence[Sequence[Dep]]) -> str | None:
    """Slurm's form of per-task dependencies: ``aftercorr`` when task i of the array waits
    for task i of one other array (an evaluation for its training), ``afterok`` for a
    single job (a second stage for its first stage's evaluation)."""
    if not any(after):
        return None
    jobs = {d.job_id for deps in after for d in deps}
    if len(after) == 1:
        return "afterok:" + ":".join(d.task for d in after[0])
    if len(jobs) == 1 and all(len(deps) == 1 and deps[0].index == i for i, deps in enumerate(after)):
        return f"aftercorr:{jobs.pop()}"
    raise ValueError("per-task dependencies of an array must pair task i with task i of one array")


def _check_epoch_length(p: PlannedPoint, r: Resources, s: SlurmSettings) -> None:
    """A requeued job resumes from its last epoch checkpoint: an epoch must fit well inside
    one time limit (half of it, less the warning), or a run would never get past it."""
    epochs = p.point.train.epochs or 1
    epoch_min = p.gpu_hours * 60 / p.point.train.gpus / epochs
    room = (r.time_min - s.signal_delay_s / 60) / 2
    if epoch_min > room:
        raise ClipscaleError(
            f"point {p.point.id}: one epoch takes about {epoch_min:,.0f} min, more than half its "
            f"{r.time_min}-min time limit, so a requeued job could lose it every time: raise "
            f"train.epochs (now {epochs}) or cluster.time_limit_min"
        )


class LocalBackend:
    name = "local"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    @property
    def width(self) -> int:
        return local.parallelism(dict(self.plan.sweep.cluster.options))

    def allowance(self) -> int | None:
        return None

    def limits(self) -> str | None:
        return None

    def validate(self, points: Sequence[PlannedPoint]) -> None:
        devices = self.gpus
        for p in points:
            wanted = p.point.train.gpus
            if devices and wanted > len(devices):
                raise ClipscaleError(
                    f"point {p.point.id} trains on {wanted} GPUs but this machine has {len(devices)} "
                    f"(cluster.gpus: {devices})"
                )

    @cached_property
    def gpus(self) -> list[int]:  # one nvidia-smi a launch
        return local.gpus(dict(self.plan.sweep.cluster.options))

    def _resources(self) -> dict[str, Any]:
        return {"parallelism": self.width, "gpus": len(self.gpus), "cpus": os.cpu_count() or 1}

    def batches(self, points: Sequence[PlannedPoint]) -> Batches:
        return [(self._resources(), tuple(p.point.id for p in points))] if points else []

    def eval_batches(self, point_ids: Sequence[str]) -> Batches:
        return [(self._resources(), tuple(point_ids))] if point_ids else []

    def submit(self, token: str, folder: Path, jobs: Sequence[Any], resources: Mapping[str, Any],
               after: Sequence[Sequence[Dep]]) -> str:  # fmt: skip
        tasks = [
            local.Task(job.ranks, tuple((d.folder, d.index) for d in deps))
            for job, deps in zip(jobs, after, strict=True)
        ]
        return local.submit(folder, jobs, tasks, cache_dir() / "local-slots", self.width, self.gpus)

    def task_id(self, job_id: str, index: int, size: int) -> str:
        return f"{job_id}:{index}"

    def settle(self, subs: Sequence[SubmissionInfo]) -> dict[str, str | None]:
        return {s.token: local.settle(Path(s.folder)) for s in subs}

    def start(self, subs: Sequence[SubmissionInfo]) -> list[str]:
        return []  # a local runner starts at once; its claim file settles races

    def discard(self, job_ids: Sequence[str]) -> None:
        return None  # a voided batch's runner finds the claim taken and exits

    def states(self, subs: Sequence[SubmissionInfo]) -> dict[tuple[str, int], State]:
        out = {}
        for s in subs:
            for i, st in local.task_states(Path(s.folder), s.size, s.job_id).items():
                out[(s.token, i)] = State(st.state, st.node, st.started_at, st.ended_at, st.reason)
        return out

    def cancel(self, sub: SubmissionInfo, indices: Sequence[int]) -> None:
        local.cancel(Path(sub.folder), indices)

    def log_path(self, sub: SubmissionInfo, index: int) -> Path:
        return Path(sub.folder) / f"{index}.log"


def backend_for(plan: Plan, launcher: str | None = None) -> Backend:
    """The backend that submits under the plan's cluster, or that follows jobs of ``launcher``."""
    kind = launcher or plan.sweep.cluster.kind
    return SlurmBackend(plan) if kind == "slurm" else LocalBackend(plan)


def jobs_root(plan: Plan) -> Path:
    """Where submissions keep their pickles and logs: beside the run directories."""
    return Path(plan.sweep.runs_root).resolve() / "_jobs"


def owner() -> str:
    return f"{socket.gethostname()} {os.getpid()} {_start_time(os.getpid())}"


def owner_gone(text: str, age_s: float) -> bool:
    """Whether the launcher that wrote an intent can still be submitting it: on this host,
    while its process lives; on another host, assumed for ten minutes."""
    host, _, rest = text.partition(" ")
    pid, _, start = rest.partition(" ")
    if host != socket.gethostname():
        return age_s > 600
    return not pid.isdigit() or _start_time(int(pid)) != start


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return "" if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        return ""
