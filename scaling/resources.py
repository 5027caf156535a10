"""Slurm resources of each planned point, and the job arrays they group into.

Every point asks for what its own size needs (nodes and GPUs from its world size, a time
limit from its estimated GPU-hours), instead of one resource spec for a whole sweep.
Points with equal resources share a job array, cut to the cluster's MaxArraySize. Time
limits are rounded up a fixed ladder so that similar points land in the same class; a
run longer than the cluster allows relies on checkpoints and requeueing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from scaling.config import ClusterSpec
from scaling.errors import ClipscaleError
from scaling.plan import PlannedPoint

TIME_LADDER_MIN = (30, 60, 120, 240, 480, 720, 1440, 2880, 4320, 10080)


@dataclass(frozen=True)
class SlurmSettings:
    """The ``cluster: slurm`` config group, checked."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int = 8
    cpus_per_gpu: int = 8
    mem_gb_per_gpu: int = 64
    time_limit_min: int = 1440  # the longest a job may ask for (the partition's MaxTime)
    time_safety: float = 1.25  # estimated run time x this, plus the overhead below
    time_overhead_min: int = 10
    max_array_size: int = 1000
    array_parallelism: int = 64
    signal_delay_s: int = 120  # Slurm warns a job this long before its time limit: checkpoint, requeue
    max_requeues: int = 20  # requeues after a time limit or preemption before a job counts as failed
    eval_time_min: int = 120  # an evaluation job's time limit (it runs on one GPU, or one CPU task)
    additional_parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Resources:
    """What one job asks Slurm for: a resource class."""

    nodes: int
    gpus_per_node: int
    tasks_per_node: int  # one task per GPU, as open_clip expects
    cpus_per_task: int
    mem_gb: int
    time_min: int
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    additional_parameters: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class JobArray:
    resources: Resources
    point_ids: tuple[str, ...]


def slurm_settings(cluster: ClusterSpec) -> SlurmSettings:
    """Typed Slurm settings; unknown or ill-typed keys are refused by name."""
    if cluster.kind != "slurm":
        raise ClipscaleError(f"cluster kind {cluster.kind!r} has no Slurm resources")
    valid = {f.name: f for f in fields(SlurmSettings)}
    values: dict[str, Any] = {}
    for key, value in cluster.options.items():
        if key not in valid:
            raise ClipscaleError(f"cluster: unknown key {key!r} (valid: kind, {', '.join(valid)})")
        values[key] = _typed(key, value, SlurmSettings.__dataclass_fields__[key].default)
    return SlurmSettings(**values)


def _typed(key: str, value: Any, default: Any) -> Any:
    if key == "additional_parameters":
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise ClipscaleError(f"cluster.{key} must map sbatch options to values")
        return tuple(sorted((str(k), str(v)) for k, v in value.items()))
    if default is None:  # the optional names: partition, account, qos, constraint
        return None if value is None else str(value)
    kind = type(default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and value != int(value))
    ):
        raise ClipscaleError(f"cluster.{key} must be a number, got {value!r}")
    if value < 0 or (value == 0 and key != "gpus_per_node"):
        raise ClipscaleError(f"cluster.{key} must be positive, got {value!r}")
    return kind(value)


def resources(point: PlannedPoint, s: SlurmSettings) -> Resources:
    """The resource class of one point."""
    gpus = point.point.train.gpus
    # CPU-only nodes (gpus_per_node 0): the world size in tasks on one node.
    per_node = gpus if s.gpus_per_node == 0 else min(gpus, s.gpus_per_node)
    if gpus % per_node:
        raise ClipscaleError(
            f"point {point.point.id} trains on {gpus} GPUs, not a whole number of "
            f"{s.gpus_per_node}-GPU nodes (cluster.gpus_per_node)"
        )
    wall_min = point.gpu_hours * 60 / gpus * s.time_safety + s.time_overhead_min
    time_min = min(next((t for t in TIME_LADDER_MIN if t >= wall_min), s.time_limit_min), s.time_limit_min)
    return Resources(
        nodes=gpus // per_node,
        gpus_per_node=per_node if s.gpus_per_node else 0,
        tasks_per_node=per_node,
        cpus_per_task=s.cpus_per_gpu,
        mem_gb=s.mem_gb_per_gpu * per_node,
        time_min=time_min,
        partition=s.partition,
        account=s.account,
        qos=s.qos,
        constraint=s.constraint,
        additional_parameters=s.additional_parameters,
    )


def eval_resources(s: SlurmSettings) -> Resources:
    """What one point's evaluation asks for: one GPU (one CPU task on CPU-only nodes) with
    its share of the node's CPUs for data-loader workers and memory, on one node."""
    return Resources(
        nodes=1,
        gpus_per_node=1 if s.gpus_per_node else 0,
        tasks_per_node=1,
        cpus_per_task=s.cpus_per_gpu,
        mem_gb=s.mem_gb_per_gpu,
        time_min=min(s.eval_time_min, s.time_limit_min),
        partition=s.partition,
        account=s.account,
        qos=s.qos,
        constraint=s.constraint,
        additional_parameters=s.additional_parameters,
    )


def job_arrays(points: Sequence[PlannedPoint], s: SlurmSettings) -> list[JobArray]:
    """Points grouped by resource class, each group cut into arrays of at most
    ``max_array_size`` tasks; classes in order of first appearance."""
    groups: dict[Resources, list[str]] = {}
    for p in points:
        groups.setdefault(resources(p, s), []).append(p.point.id)
    out = []
    for res, ids in groups.items():
        for i in range(0, len(ids), s.max_array_size):
            out.append(JobArray(res, tuple(ids[i : i + s.max_array_size])))
    return out
