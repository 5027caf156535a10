"""Expand a sweep's axes into grid points: frozen values with ids derived from their fields."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from itertools import product
from typing import Any

from scaling.config import (
    AXIS_KEYS,
    EXECUTION_FIELDS,
    TRAIN_FIELDS,
    DataSpec,
    ModelSpec,
    SweepSpec,
    TrainSettings,
    canonical_json,
)
from scaling.errors import ClipscaleError
from scaling.modeltypes import model_name, trained_type
from scaling.units import format_count

ID_VERSION = 1


@dataclass(frozen=True)
class Candidate:
    """One expanded coordinate with its merged training settings, before exact planning."""

    coords: tuple[tuple[str, Any], ...]
    model: str
    data: str
    samples_seen: int  # the target; the trainer's exact count is planned later
    train: TrainSettings
    stage: int = 1
    parent: int | None = None  # index of the first-stage candidate this one continues


@dataclass(frozen=True)
class Trajectory:
    """Where a point of a trajectory (``scaling.trajectory``) takes its weights from: the
    trunk's checkpoint at ``start_epoch`` (its parent's), trained on at constant LR (a
    segment of the trunk, ``from_checkpoint``) or cooled down for ``cooldown_epochs``."""

    trunk: str
    start_epoch: int
    cooldown_epochs: int
    from_checkpoint: bool
    # Whether it is evaluated: every branch; the trunk's segments only with
    # samples_mode=checkpoints (with branches they are the trunk, not points of a law).
    evaluated: bool = True


@dataclass(frozen=True)
class GridPoint:
    """A fully resolved run. ``id`` is a hash of everything that defines the run."""

    id: str
    sweep: str
    model: str
    data: str
    stage: int
    parent: str | None
    samples_seen_target: int
    samples_seen: int  # exactly what open_clip's trainer will count
    samples_per_epoch: int
    steps: int
    train: TrainSettings  # epochs and train_num_samples resolved
    model_config: Mapping[str, Any] | None
    data_size: int
    shards: str  # resolved shard pattern: machine-specific, so not part of the id
    trajectory: Trajectory | None = None  # None: a run of its own (samples_mode=separate)

    @property
    def start_epoch(self) -> int:
        """The epoch training starts at: its parent's checkpoint's, for a trajectory."""
        return self.trajectory.start_epoch if self.trajectory else 0

    @property
    def trained_samples(self) -> int:
        """Samples this run trains itself; the rest its weights saw in the trunk."""
        return self.samples_seen - self.start_epoch * self.samples_per_epoch

    @property
    def cooldown_share(self) -> float | None:
        """The share of its samples seen a trajectory's branch spends cooling down."""
        if self.trajectory is None or not self.trajectory.cooldown_epochs:
            return None
        return self.trajectory.cooldown_epochs / (self.train.epochs or 1)

    @property
    def evaluated(self) -> bool:
        """Whether the point is evaluated after training (a job of its own)."""
        return self.trajectory.evaluated if self.trajectory else True

    @property
    def resumes_parent(self) -> bool:
        """Whether training resumes its parent's checkpoint (weights, optimizer, epoch), as a
        trajectory does, rather than starting anew from its weights (a second stage)."""
        return self.trajectory is not None and self.parent is not None


def _value(coords: Mapping[str, Any], key: str, train: TrainSettings) -> Any:
    # A rule may match a training setting that is not an axis of this sweep.
    if key in coords:
        return coords[key]
    return getattr(train, key) if key in TRAIN_FIELDS else None


def matches(rule: Mapping[str, tuple[Any, ...]], coords: Mapping[str, Any], train: TrainSettings) -> bool:
    return all(_value(coords, k, train) in values for k, values in rule.items())


def _coordinates(spec: SweepSpec) -> list[dict[str, Any]]:
    names = [k for k, _ in spec.axes]
    grid = [dict(zip(names, combo, strict=True)) for combo in product(*(v for _, v in spec.axes))]
    kept = [c for c in grid if not any(matches(rule, c, spec.train) for rule in spec.exclude)]
    seen = {_key(c) for c in kept}  # an include that repeats a point adds nothing
    axes = dict(spec.axes)
    for entry in spec.include:
        keys = [k for k in AXIS_KEYS if k in entry or k in axes]
        for combo in product(*(entry.get(k, axes.get(k, ())) for k in keys)):
            coords = dict(zip(keys, combo, strict=True))
            if _key(coords) not in seen:
                seen.add(_key(coords))
                kept.append(coords)
    if not kept:
        raise ClipscaleError(
            f"sweep {spec.name}: the grid is empty after exclusions "
            f"({len(grid)} of {len(grid)} points excluded)"
        )
    return kept


def _key(coords: Mapping[str, Any]) -> frozenset[tuple[str, Any]]:
    return frozenset(coords.items())


def _settings(spec: SweepSpec, coords: Mapping[str, Any]) -> TrainSettings:
    # Defaults, then per-point rules in order, then the point's own axis values.
    train = spec.train
    for rule in spec.rules:
        if matches(rule.match, coords, train):
            train = replace(train, **rule.train)
    return replace(train, **{k: v for k, v in coords.items() if k in TRAIN_FIELDS})


def expand(spec: SweepSpec) -> list[Candidate]:
    """All points of the sweep in a stable order; a second stage follows each first one."""
    out: list[Candidate] = []
    for coords in _coordinates(spec):
        train = _settings(spec, coords)
        if trained_type(coords["model"], train.model_type) != train.model_type:
            raise ClipscaleError(
                f"sweep {spec.name}: model {coords['model']} trains CoCa (open_clip picks CoCa's loss by "
                f"the model's name), not model_type {train.model_type}: give it model_type coca"
            )
        first = Candidate(
            coords=tuple(coords.items()),
            model=model_name(coords["model"], train.model_type),
            data=coords["data"],
            samples_seen=coords["samples_seen"],
            train=train,
        )
        out.append(first)
        if spec.finetune is not None:
            out.append(_second_stage(first, spec.finetune, parent=len(out) - 1))
    return out


def _second_stage(first: Candidate, finetune: Mapping[str, Any], parent: int) -> Candidate:
    # The fine-tuning stage inherits the first stage's settings but plans its own epochs.
    train = replace(first.train, epochs=None, train_num_samples=None, epoch_samples=None)
    train = replace(train, **{k: v for k, v in finetune.items() if k in TRAIN_FIELDS})
    return Candidate(
        coords=(*first.coords, ("stage", 2)),
        model=first.model,
        data=finetune.get("data", first.data),
        samples_seen=finetune["samples_seen"],
        train=train,
        stage=2,
        parent=parent,
    )


def resolve_shards(pattern: str, data_root: str) -> str:
    """Relative shard patterns live under the sweep's data root; URLs and pipes stay."""
    if "://" in pattern or pattern.startswith("pipe:") or os.path.isabs(pattern):
        return pattern
    return os.path.join(os.path.abspath(os.path.expanduser(data_root)), pattern)


def point_id(fields: Mapping[str, Any], label: str) -> str:
    """``label`` for people plus a hash of the run-defining fields for machines."""
    digest = hashlib.sha256(canonical_json({"id_version": ID_VERSION, **fields}).encode()).hexdigest()
    return f"{label}_{digest[:12]}"


def _label(model: str, data: str, target: int, train: TrainSettings, stage: int,
           traj: Trajectory | None = None) -> str:  # fmt: skip
    parts = [model, data, format_count(target)]
    for short, value in (("i", train.image_size), ("t", train.context_length), ("pd", train.patch_dropout)):
        if value is not None:
            parts.append(f"{short}{value:g}")
    if train.model_type == "siglip":  # CoCa's is in its model's name
        parts.append("siglip")
    if stage > 1:
        parts.append("ft")
    if traj is not None:
        parts.append("ckpt" if traj.from_checkpoint else f"cd{traj.cooldown_epochs}")
    return "_".join(parts)


def _identity(model: ModelSpec, data: DataSpec, train: TrainSettings) -> dict[str, Any]:
    config = dict(model.open_clip_config) if model.open_clip_config is not None else None
    # epoch_samples only guided the choice of epochs, which the id now holds exactly; the
    # other execution settings change how the run is executed, not what it learns.
    settings = {k: v for k, v in asdict(train).items() if k not in EXECUTION_FIELDS and not _unused(k, train)}
    return {"model": model.name, "model_config": config, "data": data.name, "data_size": data.num_samples,
            "train": settings}  # fmt: skip


def _unused(key: str, train: TrainSettings) -> bool:
    """Settings of a model type the run is not: no part of its id, so the ids of CLIP points
    are what they were before model types were an axis."""
    if key == "model_type":
        return train.model_type == "clip"
    return key.startswith("coca_") and train.model_type != "coca"


def trunk_id(sweep: SweepSpec, model: ModelSpec, data: DataSpec, train: TrainSettings) -> str:
    """A trajectory's trunk: its model, data and constant-LR settings with its epoch length,
    whatever epochs its segments end at."""
    return point_id({"trunk": _identity(model, data, train)}, f"{model.name}_{data.name}_trunk")


def make_point(
    sweep: SweepSpec,
    cand: Candidate,
    model: ModelSpec,
    data: DataSpec,
    exact: Mapping[str, int],
    parent: str | None,
    traj: Trajectory | None = None,
) -> GridPoint:
    """Freeze a candidate with its exact sample plan (``epochs``, ``train_num_samples``,
    ``samples_per_epoch``, ``samples_seen``, ``steps``) into a grid point."""
    train = replace(cand.train, epochs=exact["epochs"], train_num_samples=exact["train_num_samples"])
    identity = {**_identity(model, data, train), "stage": cand.stage, "parent": parent,
                "samples_seen": exact["samples_seen"]}  # fmt: skip
    if traj is not None:
        # A segment's weights are the trunk's at its epoch, wherever the segment before it
        # ended (a longer axis planned later adds segments between): its parent is no part
        # of what it is. A branch is its segment's checkpoint cooled down.
        identity.update(trunk=traj.trunk, cooldown_epochs=traj.cooldown_epochs)
        if traj.from_checkpoint:
            identity["parent"] = None
    label = _label(model.name, data.name, cand.samples_seen, train, cand.stage, traj)
    config = identity["model_config"]
    return GridPoint(
        id=point_id(identity, label),
        sweep=sweep.name,
        model=model.name,
        data=data.name,
        stage=cand.stage,
        parent=parent,
        samples_seen_target=cand.samples_seen,
        samples_seen=exact["samples_seen"],
        samples_per_epoch=exact["samples_per_epoch"],
        steps=exact["steps"],
        train=train,
        model_config=config,
        data_size=data.num_samples,
        shards=resolve_shards(data.shards, sweep.data_root),
        trajectory=traj,
    )
