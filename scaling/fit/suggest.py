"""What to run next: the grid points not run yet, ranked by how much each would narrow the
prediction interval at a target per GPU-hour it costs (the plan's cost model).

A candidate's worth is estimated by refitting the law with the candidate added where the
current law expects it to land (its prediction at the candidate's compute), with the same
settings and seed, and measuring the interval at the target again. The points run first are
then those that extend the law's reach toward the target most cheaply. The estimate assumes
the new run lands on the law; one that lands off it narrows the interval less, or widens it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from scaling.errors import ClipscaleError
from scaling.fit.huber import Array

Refit = Callable[[Array, Array, Sequence[str]], object]  # compute, error, runs → a law


@dataclass(frozen=True)
class Candidate:
    """A planned point not run yet, with what the plan says it costs."""

    id: str
    model: str
    data: str
    samples_seen: int
    compute: float
    gpu_hours: float


@dataclass(frozen=True)
class Gain:
    candidate: Candidate
    expected: float  # the error the law predicts at the candidate's compute
    width: float  # the interval's width at the target with the candidate added
    narrowing: float  # the interval's width now minus ``width``
    chosen: bool  # in the greedy selection within the budget

    @property
    def per_hour(self) -> float:
        return self.narrowing / self.candidate.gpu_hours if self.candidate.gpu_hours > 0 else float("inf")


@dataclass(frozen=True)
class Suggestion:
    target: str
    compute: float  # the target's compute
    error: float  # predicted now
    interval: tuple[float, float]  # now
    budget: float  # GPU-hours
    gains: tuple[Gain, ...]  # best narrowing per GPU-hour first

    @property
    def width(self) -> float:
        return self.interval[1] - self.interval[0]

    @property
    def chosen(self) -> tuple[Gain, ...]:
        return tuple(g for g in self.gains if g.chosen)

    def record(self) -> dict[str, object]:
        return {
            "target": self.target, "compute": self.compute, "error": self.error,
            "error_ci": list(self.interval),
            "width": self.width, "budget_gpu_hours": self.budget,
            "chosen_gpu_hours": sum(g.candidate.gpu_hours for g in self.chosen),
            "candidates": [{
                "id": g.candidate.id, "model": g.candidate.model, "data": g.candidate.data,
                "samples_seen": g.candidate.samples_seen, "compute": g.candidate.compute,
                "gpu_hours": g.candidate.gpu_hours, "expected_error": g.expected, "width": g.width,
                "narrowing": g.narrowing, "narrowing_per_gpu_hour": g.per_hour, "chosen": g.chosen,
            } for g in self.gains],
        }  # fmt: skip


def suggest(
    law: object, compute: Array, error: Array, ids: Sequence[str], candidates: Sequence[Candidate],
    target: str, target_compute: float, budget: float, refit: Refit,
) -> Suggestion:  # fmt: skip
    """Rank ``candidates`` by narrowing of the interval at ``target_compute`` per GPU-hour,
    and choose the best of them, greedily, within ``budget`` GPU-hours."""
    if not budget > 0:
        raise ClipscaleError(f"budget={budget:g}: give the GPU-hours to spend, a positive number")
    if not candidates:
        raise ClipscaleError("every point of the plan has run: nothing to suggest")
    cheapest = min(candidates, key=lambda c: c.gpu_hours)
    if budget < cheapest.gpu_hours:
        raise ClipscaleError(
            f"budget={budget:g} GPU-hours is below the cheapest point's cost "
            f"({cheapest.gpu_hours:.3g} GPU-hours, {cheapest.id})"
        )
    now, interval = law.predict(target_compute)  # type: ignore[attr-defined]
    if not np.all(np.isfinite(interval)):
        raise ClipscaleError("the law has no interval at the target (boot=0): nothing to narrow")
    width = interval[1] - interval[0]
    gains = []
    for cand in candidates:
        # Where the law expects it: its central value (its interval is not needed here).
        expected = float(10 ** law.log10_error(np.array([cand.compute]))[0])  # type: ignore[attr-defined]
        added = refit(np.append(compute, cand.compute), np.append(error, expected), [*ids, cand.id])
        lo, hi = added.predict(target_compute)[1]  # type: ignore[attr-defined]
        gains.append(Gain(cand, expected, hi - lo, width - (hi - lo), False))
    ranked = sorted(gains, key=lambda g: (-g.per_hour, g.candidate.gpu_hours, g.candidate.id))
    return Suggestion(target, target_compute, float(now), (float(interval[0]), float(interval[1])), budget,
                      _within(ranked, budget))  # fmt: skip


def _within(ranked: Sequence[Gain], budget: float) -> tuple[Gain, ...]:
    """Mark, best first, the candidates that narrow the interval and fit in what is left."""
    left, out = budget, []
    for g in ranked:
        take = g.narrowing > 0 and g.candidate.gpu_hours <= left
        left -= g.candidate.gpu_hours if take else 0.0
        out.append(Gain(g.candidate, g.expected, g.width, g.narrowing, take))
    return tuple(out)
