"""Which of two data sets (or model families) is better, decided at small scale, scored by
decision accuracy (DataDecide, 2025): how often a way of deciding picks the side that wins
at the largest scale both sides reached.

A scale is a (model, samples seen) both sides trained (see scale_keys). The winner is the side with the
lower error at the largest such scale; the ways of deciding see only runs below a compute
cut (the top quarter of log compute held out by default, as in the audit):

- ``single scale``: rank the two sides at the largest scale below the cut;
- ``laws``: fit each side's law on its runs below the cut and rank their predictions at
  the winner's compute.

Each is repeated on bootstrap resamples of each side's runs below the cut: its decision
accuracy is the share of resamples in which it picks the winner, and the interval of its
margin (the error of b minus that of a, where it decides; > 0 favours a) comes from the same
resamples. One run per scale gives single scale no noise to resample but which scales are
present; seeds repeated at a scale would (their errors are averaged).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from scaling.errors import ClipscaleError
from scaling.fit.audit import compute_cut
from scaling.fit.huber import Array
from scaling.fit.powerlaw import percentile_interval
from scaling.units import format_count

Fitter = Callable[[Array, Array, Sequence[str]], object]  # compute, error, runs → a law
Index = np.ndarray[tuple[int], np.dtype[np.intp]]  # runs drawn, by position


@dataclass(frozen=True)
class Side:
    """One side's runs: a scale key (model, samples seen) per run, compute, error, id."""

    keys: tuple[Hashable, ...]
    compute: Array
    error: Array
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Method:
    name: str
    picks: str | None  # "a" or "b", decided on every run below the cut; None: it cannot decide
    margin: float  # error of b − error of a where it decides (> 0 favours a)
    margin_ci: tuple[float, float]
    accuracy: float  # share of the valid resamples picking the winner
    valid: int  # resamples in which it could decide


@dataclass(frozen=True)
class Decision:
    target: Hashable  # the largest scale both sides reached
    compute: float
    errors: tuple[float, float]  # of a and b at the target
    cut: float
    methods: tuple[Method, ...]
    n_boot: int
    level: float

    @property
    def winner(self) -> str:
        return "a" if self.errors[0] < self.errors[1] else "b"

    def summary(self) -> str:
        """One line per method, for people: what it picks, its margin, its decision accuracy."""
        lines = [
            f"winner at {_label(self.target)} (compute {self.compute:.3g}): {self.winner} (error "
            f"{self.errors[0]:.4g} vs {self.errors[1]:.4g}); deciding below compute {self.cut:.3g}:"
        ]
        for m in self.methods:
            if m.picks is None:
                lines.append(f"{m.name}: cannot decide on the runs below the cut")
                continue
            lo, hi = m.margin_ci
            lines.append(
                f"{m.name}: picks {m.picks}, margin {m.margin:+.4f} [{lo:+.4f}, {hi:+.4f}], "
                f"decision accuracy {m.accuracy:.0%} of {m.valid} resamples"
            )
        return "\n".join(lines)

    def record(self) -> dict[str, object]:
        return {
            "target": list(self.target) if isinstance(self.target, tuple) else self.target,
            "compute": self.compute, "errors": list(self.errors), "winner": self.winner, "cut": self.cut,
            "n_boot": self.n_boot, "level": self.level,
            "methods": [{"name": m.name, "picks": m.picks, "margin": m.margin, "margin_ci": list(m.margin_ci),
                         "accuracy": m.accuracy, "valid": m.valid} for m in self.methods],
        }  # fmt: skip


def decide(
    a: Side,
    b: Side,
    fitters: tuple[Fitter, Fitter],
    cut: float | None = None,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> Decision:
    """Score single-scale ranking and fitted laws (``fitters``: each side's) at picking the
    winner at the largest scale. ``cut`` (default: the top quarter of the log compute of the
    scales both reached) divides the runs the methods see from those they decide for."""
    at_a, at_b = _by_scale(a), _by_scale(b)
    shared = sorted(set(at_a) & set(at_b), key=lambda k: at_a[k][0])
    if not shared:
        raise ClipscaleError("the two sides share no scale (model and samples seen): nothing to decide")
    target = shared[-1]
    cut = cut if cut is not None else compute_cut(np.array([at_a[k][0] for k in shared]))
    compute, (ea, eb) = at_a[target][0], (at_a[target][1], at_b[target][1])
    if compute < cut:
        raise ClipscaleError(f"no scale both sides reached is at or above the cut (compute ≥ {cut:.3g})")
    if ea == eb:
        raise ClipscaleError(f"the two sides tie at {_label(target)}: there is no winner to decide")
    below_a, below_b = a.compute < cut, b.compute < cut
    if not any(at_a[k][0] < cut for k in shared):
        raise ClipscaleError(f"no scale both sides reached is below the cut (compute < {cut:.3g})")
    winner = 1.0 if ea < eb else -1.0  # the sign of the margin that favours the winner

    def single(ia: Index, ib: Index) -> float | None:
        sa, sb = _by_scale(_take(a, ia)), _by_scale(_take(b, ib))
        small = [k for k in set(sa) & set(sb) if sa[k][0] < cut]
        if not small:
            return None
        k = max(small, key=lambda s: sa[s][0])
        return sb[k][1] - sa[k][1]

    def laws(ia: Index, ib: Index) -> float | None:
        try:
            la, lb = fitters[0](*_arrays(a, ia)), fitters[1](*_arrays(b, ib))
        except ClipscaleError:
            return None  # too few frontier points in this resample
        point = np.array([compute])
        return float(10 ** lb.log10_error(point)[0] - 10 ** la.log10_error(point)[0])  # type: ignore[attr-defined]

    full_a, full_b = np.flatnonzero(below_a), np.flatnonzero(below_b)
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(full_a, len(full_a)), rng.choice(full_b, len(full_b))) for _ in range(n_boot)]
    methods = []
    for name, way in (("single scale", single), ("laws", laws)):
        margin = way(full_a, full_b)
        if margin is None:  # e.g. too few runs below the cut for a side's law
            nan = float("nan")
            methods.append(Method(name, None, nan, (nan, nan), nan, 0))
            continue
        margins = np.array([m for m in (way(ia, ib) for ia, ib in draws) if m is not None])
        methods.append(Method(
            name, "a" if margin > 0 else "b", margin, percentile_interval(margins, level),
            float(np.mean(np.sign(margins) == winner)) if len(margins) else float("nan"), len(margins),
        ))  # fmt: skip
    return Decision(target, compute, (ea, eb), cut, tuple(methods), n_boot, level)


SAME_SCALE = 1.15  # samples seen within this ratio are one scale (the paper's "13B" is 12.2B–13.2B)


def scale_keys(models: Sequence[str], samples: Sequence[int]) -> list[tuple[str, int]]:
    """A scale per run, (model, samples seen), where a model's runs whose samples seen lie
    within SAME_SCALE of each other (nominally equal budgets) share the lowest of them."""
    keys: dict[tuple[str, int], tuple[str, int]] = {}
    for model in set(models):
        first = 0
        for n in sorted({s for m, s in zip(models, samples, strict=True) if m == model}):
            first = n if not first or n > first * SAME_SCALE else first
            keys[(model, n)] = (model, first)
    return [keys[(m, s)] for m, s in zip(models, samples, strict=True)]


def _by_scale(side: Side) -> dict[Hashable, tuple[float, float]]:
    """Compute and mean error per scale (several seeds at a scale are averaged)."""
    out: dict[Hashable, list[tuple[float, float]]] = {}
    for k, c, e in zip(side.keys, side.compute, side.error, strict=True):
        out.setdefault(k, []).append((float(c), float(e)))
    return {k: (float(np.mean([c for c, _ in v])), float(np.mean([e for _, e in v]))) for k, v in out.items()}


def _take(side: Side, idx: Index) -> Side:
    return Side(tuple(side.keys[i] for i in idx), side.compute[idx], side.error[idx],
                tuple(side.ids[i] for i in idx))  # fmt: skip


def _arrays(side: Side, idx: Index) -> tuple[Array, Array, list[str]]:
    # A run drawn twice is two points to the fitter: name the copies apart.
    return side.compute[idx], side.error[idx], [f"{side.ids[i]}#{j}" for j, i in enumerate(idx)]


def _label(key: Hashable) -> str:
    if isinstance(key, tuple) and len(key) == 2:
        return f"{key[0]}@{format_count(key[1])}"
    return str(key)
