"""A samples-seen axis trained as one trajectory (``samples_mode=branches|checkpoints``).

Trained separately, the points (model, data, settings) x samples seen S_1 < ... < S_m cost
the sum of the S_i. As one trajectory they cost about the largest (Hägele et al. 2024: a
constant learning rate with a cooldown of 10-20 % matches a cosine run of the same length):

- a **trunk** trains at constant learning rate (``--lr-scheduler const``), as segments, one
  job each, that end where a point needs the trunk's weights;
- with ``branches`` every point is a **branch**: it resumes the trunk's checkpoint at the
  start of its cooldown and cools down (``const-cooldown``) to exactly its samples seen.
  A branch depends on its segment alone, so it starts as soon as that checkpoint exists;
- with ``checkpoints`` the segments end at the axis' values, and only the largest point is
  cooled down, as LAION 2025 evaluates the checkpoints of its constant-LR runs.

Each segment is a point of its own (``from_checkpoint``): the weights of a constant-LR run.
With ``checkpoints`` it is evaluated like every point, and a fit can take it in or leave it
out; with ``branches`` it is the trunk alone, trained and not evaluated (an evaluation can
cost as much as a short run: a linear probe over ImageNet's training set). A segment's id
depends on the trunk and the epoch it ends at, not on where the previous segment ended: a
longer axis planned later extends the same trunk.

All runs of a trajectory share one epoch length L, so that every branch starts on an epoch
boundary (the trainer saves a checkpoint at each epoch's end and resumes at one). L is the
longest whole number of the trainer's quantum that puts every point within
``SAMPLES_TOLERANCE`` of its samples seen and every cooldown within ``COOLDOWN_TOLERANCE``
of the cooldown share, or, where none does, the one that misses least;
``train.epoch_samples`` fixes it instead (keep it fixed to extend a trunk later). A
trajectory trains with the settings of its largest point, the run it stands in for; the
per-run ``epochs`` and ``train_num_samples`` of a sweep's settings are for separate runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scaling.compute import trainer_epoch
from scaling.config import DataSpec, ModelSpec, SweepSpec, TrainSettings
from scaling.errors import ClipscaleError
from scaling.grid import Candidate, GridPoint, Trajectory, make_point, trunk_id

# Relative miss of a point's samples seen (its exact count is what a law uses; a tighter
# miss forces short epochs on a small-batch axis: the toy grid's 4k-64k ran 1-batch epochs at
# 2 %, half their time spent between epochs, and 6-batch epochs at 5 %).
SAMPLES_TOLERANCE = 0.05
COOLDOWN_TOLERANCE = 0.25  # relative miss of a point's cooldown share
_MAX_EPOCHS = 100_000  # the search never plans a trunk of more epochs than this


@dataclass(frozen=True)
class EpochPlan:
    """One trajectory's epochs: length L, and per samples-seen target its epochs E and
    cooldown epochs C (a branch resumes the trunk at epoch E - C)."""

    samples_per_epoch: int  # L, exactly as the trainer counts it
    steps_per_epoch: int
    targets: tuple[int, ...]
    epochs: tuple[int, ...]
    cooldowns: tuple[int, ...]
    share: float

    def miss(self) -> tuple[float, float]:
        """The largest relative miss of the targets and of the cooldown share."""
        return _misses(self.targets, self.epochs, self.cooldowns, self.samples_per_epoch, self.share)


def _quantum(train: TrainSettings) -> int:
    # Whole optimizer steps per epoch, and batches per epoch a multiple of the loader's
    # workers: an epoch of L samples then passes through the trainer unchanged.
    return train.batch_size * train.gpus * math.lcm(max(1, train.workers), train.accum_freq)


def _split(targets: Sequence[int], length: int, share: float) -> tuple[list[int], list[int]]:
    epochs = [max(2, round(s / length)) for s in targets]
    cooldowns = [min(e - 1, max(1, round(share * e))) for e in epochs]
    return epochs, cooldowns


def _misses(targets: Sequence[int], epochs: Sequence[int], cooldowns: Sequence[int], length: int,
            share: float) -> tuple[float, float]:  # fmt: skip
    samples = max(abs(e * length - s) / s for s, e in zip(targets, epochs, strict=True))
    cooldown = max(abs(c / e - share) / share for e, c in zip(epochs, cooldowns, strict=True))
    return samples, cooldown


def epoch_plan(targets: Sequence[int], share: float, train: TrainSettings) -> EpochPlan:
    """Choose the trajectory's epoch length L for these samples-seen targets."""
    ordered = tuple(sorted(set(targets)))
    q = _quantum(train)
    fixed = train.epoch_samples
    if fixed is not None:
        lengths: Sequence[int] = [max(1, round(fixed / q)) * q]
    else:
        # An epoch at most the smallest point's cooldown, so that it has one epoch of it.
        top = max(1, math.floor(ordered[0] * share / q))
        bottom = min(top, max(1, math.ceil(ordered[-1] / (_MAX_EPOCHS * q))))
        lengths = [k * q for k in _candidates(top, bottom)]
    best: tuple[float, int] | None = None
    for length in lengths:
        epochs, cooldowns = _split(ordered, length, share)
        samples, cooldown = _misses(ordered, epochs, cooldowns, length, share)
        if samples <= SAMPLES_TOLERANCE and cooldown <= COOLDOWN_TOLERANCE:
            best = (0.0, length)
            break  # the longest epoch that meets both: the fewest epochs and checkpoints
        score = max(samples / SAMPLES_TOLERANCE, cooldown / COOLDOWN_TOLERANCE)
        if best is None or score < best[0]:
            best = (score, length)
    assert best is not None
    length = best[1]
    batches, per_epoch = trainer_epoch(length, train.batch_size, train.gpus, train.workers)
    epochs, cooldowns = _split(ordered, per_epoch, share)
    return EpochPlan(per_epoch, batches // train.accum_freq, ordered, tuple(epochs), tuple(cooldowns), share)


def _candidates(top: int, bottom: int, most: int = 20_000) -> list[int]:
    """Quanta per epoch to try, longest first: every one from ``top`` down to ``bottom``,
    or, for a wide range (a small batch on a long axis), ``most`` spread geometrically."""
    if top - bottom < most:
        return list(range(top, bottom - 1, -1))
    ratio = bottom / top
    return sorted({max(bottom, round(top * ratio ** (i / most))) for i in range(most + 1)}, reverse=True)


@dataclass(frozen=True)
class _Stop:
    """An epoch the trunk stops at (a segment's end), and the target it stands for."""

    epoch: int
    target: int | None  # the axis value a checkpoint point stands for, if any


def trajectory_points(
    sweep: SweepSpec, group: Sequence[Candidate], model: ModelSpec, data: DataSpec
) -> list[GridPoint]:
    """The trunk's segments (in order), then the branches, of one (model, data, settings)
    group of candidates that differ only in samples seen."""
    first = group[0]
    where = f"point {first.model} x {first.data}"
    share, mode = sweep.cooldown, sweep.samples_mode
    plan = epoch_plan([c.samples_seen for c in group], share, first.train)
    length, steps = plan.samples_per_epoch, plan.steps_per_epoch
    trunk_train = replace(first.train, lr_scheduler="const", train_num_samples=length, epochs=None)
    trunk = trunk_id(sweep, model, data, trunk_train)

    ends = [(e, c, t) for e, c, t in zip(plan.epochs, plan.cooldowns, plan.targets, strict=True)]
    if mode == "branches":
        stops = {e - c: _Stop(e - c, None) for e, c, _ in ends}
        branches = ends
    else:  # checkpoints: the axis' values are the trunk's stops; the largest is cooled down
        *passed, last = ends
        stops = {e: _Stop(e, t) for e, _, t in passed}
        stops.setdefault(last[0] - last[1], _Stop(last[0] - last[1], None))
        branches = [last]
    ordered = [stops[e] for e in sorted(stops)]
    if ordered[0].epoch * steps <= first.train.warmup:
        raise ClipscaleError(
            f"{where}: the trunk's first checkpoint at {ordered[0].epoch * length:,} samples "
            f"({ordered[0].epoch * steps:,} steps) does not come after warm-up ({first.train.warmup:,} "
            "steps): lower train.warmup or drop the smallest samples_seen"
        )

    def point(target: int, epochs: int, start: int, cooldown: int, parent: str | None) -> GridPoint:
        scheduler = "const-cooldown" if cooldown else "const"
        train = replace(trunk_train, epochs=epochs, lr_scheduler=scheduler)
        cand = replace(first, samples_seen=target, train=train)
        exact = {"epochs": epochs, "train_num_samples": length, "samples_per_epoch": length,
                 "samples_seen": epochs * length, "steps": epochs * steps}  # fmt: skip
        segment = cooldown == 0
        evaluated = not segment or mode == "checkpoints"
        traj = Trajectory(trunk, start, cooldown, from_checkpoint=segment, evaluated=evaluated)
        return make_point(sweep, cand, model, data, exact, parent, traj)

    out: list[GridPoint] = []
    segment: dict[int, str] = {}
    for stop in ordered:
        previous = out[-1] if out else None
        start, parent = (previous.train.epochs or 0, previous.id) if previous else (0, None)
        out.append(point(stop.target or stop.epoch * length, stop.epoch, start, 0, parent))
        segment[stop.epoch] = out[-1].id
    for epochs, cooldown, target in branches:
        out.append(point(target, epochs, epochs - cooldown, cooldown, segment[epochs - cooldown]))
    return out
