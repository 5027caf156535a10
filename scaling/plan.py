"""Plan a sweep: every grid point with its exact samples seen, compute and cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scaling.checkpoints import checkpoint_gb, disk_gb
from scaling.compute import Macs, MacsCache, gpu_hours, macs_for, macs_key, plan_samples
from scaling.config import SweepSpec, load_sweep
from scaling.errors import ClipscaleError
from scaling.grid import GridPoint, expand, make_point


@dataclass(frozen=True)
class PlannedPoint:
    point: GridPoint
    macs: Macs  # per sample, GMACs, at this stage's image size / context / patch dropout
    stage_compute_gmacs: float  # this stage alone
    compute_gmacs: float  # the final model's: a fine-tuning stage adds its parent's
    gpu_hours: float  # this stage alone
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
    points: list[GridPoint] = []
    for cand in candidates:
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
    _check_unique(points)

    archs = [_arch(spec, p) for p in points]
    macs = macs_for(archs, cache)
    planned: list[PlannedPoint] = []
    by_id: dict[str, PlannedPoint] = {}
    for point, arch in zip(points, archs, strict=True):
        m = macs[macs_key(*arch)]
        stage = m.total * point.samples_seen
        total = stage + (by_id[point.parent].compute_gmacs if point.parent else 0.0)
        hours = gpu_hours(m.total, point.samples_seen, spec.gpu)
        disk = disk_gb(m.params, spec.checkpoints, point.train.epochs or 1)
        planned.append(PlannedPoint(point, m, stage, total, hours, disk))
        by_id[point.id] = planned[-1]
    return Plan(spec, tuple(planned))


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
