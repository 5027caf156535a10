"""Plan a sweep: every grid point with its exact samples seen, compute and cost."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from scaling.checkpoints import checkpoint_gb, disk_gb
from scaling.compute import Macs, MacsCache, gpu_hours, macs_for, macs_key, plan_samples
from scaling.config import SweepSpec, load_sweep
from scaling.errors import ClipscaleError
from scaling.grid import Candidate, GridPoint, expand, make_point
from scaling.trajectory import trajectory_points


@dataclass(frozen=True)
class PlannedPoint:
    point: GridPoint
    macs: Macs  # per sample, GMACs, at this stage's image size / context / patch dropout
    stage_compute_gmacs: float  # this run alone (a branch: its cooldown; a segment: its epochs)
    compute_gmacs: float  # what the final weights took: a second stage adds its parent's
    gpu_hours: float  # this run alone: a trajectory's runs add up to what it spends
    disk_gb: float = 0.0  # the most its checkpoints take at once (checkpoints.disk_gb)

    def record(self) -> dict[str, Any]:
        """A flat, JSON-ready description of the point (the ``--format json|csv`` row)."""
        p, t = self.point, self.point.train
        return {
            "id": p.id,
            "sweep": p.sweep,
            "model": p.model,
            "data": p.data,
            "stage": p.stage,
            "parent": p.parent,
            "schedule": t.lr_scheduler,
            "trunk": p.trajectory.trunk if p.trajectory else None,
            "from_checkpoint": bool(p.trajectory and p.trajectory.from_checkpoint),
            "evaluated": p.evaluated,
            "start_epoch": p.start_epoch,
            "cooldown_epochs": p.trajectory.cooldown_epochs if p.trajectory else 0,
            "cooldown": p.cooldown_share,
            "samples_seen_target": p.samples_seen_target,
            "samples_seen": p.samples_seen,
            "epochs": t.epochs,
            "train_num_samples": t.train_num_samples,
            "samples_per_epoch": p.samples_per_epoch,
            "steps": p.steps,
            "global_batch_size": t.global_batch_size,
            "batch_size": t.batch_size,
            "gpus": t.gpus,
            "accum_freq": t.accum_freq,
            "workers": t.workers,
            "lr": t.lr,
            "warmup": t.warmup,
            "precision": t.precision,
            "image_size": t.image_size,
            "context_length": t.context_length,
            "patch_dropout": t.patch_dropout,
            "image_gmacs": self.macs.image,
            "text_gmacs": self.macs.text,
            "decoder_gmacs": self.macs.decoder,
            "model_type": t.model_type,
            "gmacs_per_sample": self.macs.total,
            "stage_compute_gmacs": self.stage_compute_gmacs,
            "compute_gmacs": self.compute_gmacs,
            "gpu_hours": self.gpu_hours,
            "params": self.macs.params,
            "checkpoint_gb": checkpoint_gb(self.macs.params),
            "disk_gb": self.disk_gb,
            "shards": p.shards,
        }


@dataclass(frozen=True)
class Plan:
    sweep: SweepSpec
    points: tuple[PlannedPoint, ...]
    # What the same points cost trained one run each (samples_mode=separate), for a sweep
    # trained as trajectories; None for a separate sweep.
    separate_gpu_hours: float | None = None

    @property
    def total_gpu_hours(self) -> float:
        return sum(p.gpu_hours for p in self.points)

    @property
    def total_disk_gb(self) -> float:
        return sum(p.disk_gb for p in self.points)

    @property
    def total_compute_gmacs(self) -> float:
        return sum(p.stage_compute_gmacs for p in self.points)

    def records(self) -> list[dict[str, Any]]:
        return [p.record() for p in self.points]


def plan_spec(spec: SweepSpec, cache: MacsCache | None = None) -> Plan:
    """Resolve and check every point of ``spec`` before anything is run."""
    candidates = expand(spec)
    if spec.samples_mode == "separate":
        points = _separate(spec, candidates)
    else:
        points = _trajectories(spec, candidates)
    _check_unique(points)

    archs = [_arch(spec, p) for p in points]
    macs = macs_for(archs, cache)
    planned: list[PlannedPoint] = []
    by_id: dict[str, PlannedPoint] = {}
    for point, arch in zip(points, archs, strict=True):
        m = macs[macs_key(*arch)]
        stage = m.total * point.trained_samples
        if point.resumes_parent or point.parent is None:
            total = m.total * point.samples_seen
        else:  # a second stage: its first stage's compute, at that stage's shapes, and its own
            total = stage + by_id[point.parent].compute_gmacs
        hours = gpu_hours(m.total, point.trained_samples, spec.gpu)
        disk = disk_gb(m.params, spec.checkpoints, point.train.epochs or 1)
        planned.append(PlannedPoint(point, m, stage, total, hours, disk))
        by_id[point.id] = planned[-1]
    separate = None
    if spec.samples_mode != "separate":
        with contextlib.suppress(ClipscaleError):  # points too short to train alone
            separate = plan_spec(replace(spec, samples_mode="separate"), cache).total_gpu_hours
    return Plan(spec, tuple(planned), separate)


def _trajectories(spec: SweepSpec, candidates: Sequence[Candidate]) -> list[GridPoint]:
    """Candidates that differ only in samples seen form one trajectory each, trained with
    the settings of its largest point (the run it stands in for), its epochs chosen anew."""
    groups: dict[tuple[object, ...], list[Candidate]] = {}
    for cand in candidates:
        key = (cand.model, cand.data, *(kv for kv in cand.coords if kv[0] != "samples_seen"))
        groups.setdefault(key, []).append(cand)
    points: list[GridPoint] = []
    for group in groups.values():
        largest = max(group, key=lambda c: c.samples_seen)
        train = replace(largest.train, epochs=None, train_num_samples=None)
        group = [replace(c, train=train) for c in group]
        points += trajectory_points(spec, group, spec.models[largest.model], spec.datasets[largest.data])
    return points


def _separate(spec: SweepSpec, candidates: Sequence[Candidate]) -> list[GridPoint]:
    points: list[GridPoint] = []
    for cand in candidates:
        t = cand.train
        if t.lr_scheduler == "const-cooldown" and "--epochs-cooldown" not in t.extra_args:
            # open_clip's const-cooldown needs its cooldown's length in epochs.
            raise ClipscaleError(
                f"point {cand.model} x {cand.data}: lr_scheduler const-cooldown in samples_mode=separate "
                "needs --epochs-cooldown in train.extra_args; or train the axis with samples_mode=branches"
            )
        data = spec.datasets[cand.data]
        where = f"point {cand.model} x {cand.data} x {cand.samples_seen:,} samples"
        exact = plan_samples(cand.samples_seen, data.num_samples, cand.train, where)
        if cand.train.warmup >= exact.steps:
            raise ClipscaleError(
                f"{where}: warmup of {cand.train.warmup:,} steps is not shorter than the run "
                f"({exact.steps:,} steps)"
            )
        parent = points[cand.parent].id if cand.parent is not None else None
        points.append(make_point(spec, cand, spec.models[cand.model], data, exact.as_dict(), parent))
    return points


def _arch(spec: SweepSpec, p: GridPoint) -> tuple[Any, int | None, int | None, float | None]:
    t = p.train
    return (spec.models[p.model], t.image_size, t.context_length, t.patch_dropout)


def _check_unique(points: Sequence[GridPoint]) -> None:
    # Two coordinates that resolve to the same run would be trained twice.
    seen: dict[str, GridPoint] = {}
    for p in points:
        if p.id in seen:
            raise ClipscaleError(f"two grid points resolve to the same run {p.id}")
        seen[p.id] = p


def plan(sweep: str = "toy", overrides: Sequence[str] = (), config_dir: Sequence[str] = ()) -> Plan:
    """Compose, validate and plan a sweep: the library form of ``scaling plan``."""
    return plan_spec(load_sweep(sweep, overrides, config_dir))


def select(plan: Plan, point_id: str | None = None) -> PlannedPoint:
    """The one point named by ``point_id``, or the only point of the plan."""
    if point_id is not None:
        for p in plan.points:
            if p.point.id == point_id:
                return p
        raise ClipscaleError(f"sweep {plan.sweep.name} has no point {point_id!r}")
    if len(plan.points) != 1:
        raise ClipscaleError(
            f"sweep {plan.sweep.name} has {len(plan.points)} points: name one with --id, "
            "or narrow the axes with overrides (model=..., data=..., samples_seen=...)"
        )
    return plan.points[0]
