"""The extrapolation audit: fit a law on the runs it may see, predict the runs it may not
(those at or above a compute cut, of the largest model, or of the largest data set), and
score every prediction: its error, its absolute relative error (ARE) and whether its
interval covers the truth. Forms are chosen here, by held-out error, never by in-sample fit.

A law describes the frontier: the least error reachable at a compute. A held-out run above
the frontier (a small model trained far too long) is listed and scored, but the audit's ARE
and coverage are taken over the held-out runs on the frontier of all runs (no run of less or
equal compute has a lower error), the runs the law claims to predict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaling.errors import ClipscaleError
from scaling.fit.curve import LN10, band
from scaling.fit.huber import Array

PARSIMONY = 0.10  # a form with more parameters must cut the held-out ARE by this share to win,
SIGNIFICANCE = 2.0  # and by this many standard errors of the runs' paired differences,
NOISE = 1.5  # and only if the simpler form's ARE exceeds this many times the richer fit's scatter

Fitter = Callable[[Array, Array, Sequence[str]], Any]  # compute, error, runs → a law


@dataclass(frozen=True)
class HeldOut:
    run: str
    compute: float
    error: float  # actual E
    predicted: float  # E the law predicts
    predicted_ci: tuple[float, float]  # its prediction interval (a new run at that compute)
    frontier: bool  # on the frontier of all runs: what the law claims to predict

    @property
    def covered(self) -> bool:
        return bool(self.predicted_ci[0] <= self.error <= self.predicted_ci[1])

    @property
    def are(self) -> float:
        return abs(self.predicted - self.error) / self.error


@dataclass(frozen=True)
class Audit:
    """One form fitted on the runs it may see and scored on those it may not."""

    form: str
    split: str  # what was held out, for people
    law: Any  # the law fitted on the runs below the split (Law or Curve)
    held_out: tuple[HeldOut, ...]
    n_fit: int  # runs the law was fitted on

    @property
    def scored(self) -> tuple[HeldOut, ...]:
        return tuple(h for h in self.held_out if h.frontier)

    @property
    def are(self) -> float:
        """Mean ARE of E over the held-out runs on the frontier."""
        return float(np.mean([h.are for h in self.scored]))

    @property
    def are_all(self) -> float:
        return float(np.mean([h.are for h in self.held_out]))

    @property
    def coverage(self) -> float:
        return float(np.mean([h.covered for h in self.scored]))


def on_frontier(compute: Array, error: Array) -> Array:
    """Whether each run has no run of less or equal compute with a lower error."""
    order = np.lexsort((error, compute))
    best = np.minimum.accumulate(error[order])
    before = np.concatenate(([np.inf], best[:-1]))
    out = np.zeros(len(compute), dtype=bool)
    out[order] = error[order] < before
    return out


def audit(
    fitter: Fitter, form: str, compute: Array, error: Array, runs: Sequence[str], held: Array, split: str,
    level: float = 0.95,
) -> Audit:  # fmt: skip
    """Fit on the runs not ``held`` and predict those that are."""
    c, e, held = np.asarray(compute, float), np.asarray(error, float), np.asarray(held, bool)
    if held.all():
        raise ClipscaleError(f"{split} leaves no run to fit")
    if not held.any():
        raise ClipscaleError(f"{split} leaves no run to predict")
    front = on_frontier(c, e)
    if not front[held].any():
        raise ClipscaleError(
            f"{split}: no held-out run is on the frontier, nothing the law claims to predict"
        )
    keep = np.logical_not(held)
    law = fitter(c[keep], e[keep], [r for r, k in zip(runs, keep, strict=True) if k])
    if len(law.frontier) <= len(law.params):
        raise ClipscaleError(
            f"{split}: the law below it stands on {len(law.frontier)} frontier points for {len(law.params)} "
            "parameters, nothing left to judge its error by"
        )
    idx = np.flatnonzero(held)
    point = 10 ** law.log10_error(c[idx])
    lo, hi = band(law, c[idx], level, predictive=True)
    rows = tuple(
        HeldOut(runs[i], float(c[i]), float(e[i]), float(p), (float(a), float(b)), bool(front[i]))
        for i, p, a, b in zip(idx, point, lo, hi, strict=True)
    )
    return Audit(form, split, law, rows, int(keep.sum()))


def compute_cut(compute: Array, share: float = 0.75) -> float:
    """The default cut: held out are the runs in the top quarter of the log-compute range."""
    lo, hi = np.log10(np.min(compute)), np.log10(np.max(compute))
    return float(10 ** (lo + share * (hi - lo)))


@dataclass(frozen=True)
class Choice:
    """Which form extrapolates best here, and every candidate's audit (or why it failed)."""

    form: str
    audits: tuple[Audit, ...]
    failed: tuple[tuple[str, str], ...]  # form, reason

    @property
    def reason(self) -> str:
        scores = ", ".join(f"{a.form} {a.are:.2%}" for a in self.audits)
        return (f"held-out ARE {scores}; a form with more parameters wins only by ≥ {PARSIMONY:.0%} "
                f"and {SIGNIFICANCE:g} standard errors")  # fmt: skip


def choose(candidates: Sequence[tuple[str, int, Callable[[], Audit]]]) -> Choice:
    """Run each candidate's audit (forms ordered by their number of parameters) and keep the
    simplest form that no richer form beats by more than PARSIMONY of its held-out ARE."""
    audits, failed = [], []
    for name, _, run in sorted(candidates, key=lambda c: c[1]):
        try:
            audits.append(run())
        except ClipscaleError as e:
            failed.append((name, str(e)))
    if not audits:
        raise ClipscaleError("no form could be audited: " + "; ".join(f"{n}: {r}" for n, r in failed))
    chosen = audits[0]
    for a in audits[1:]:
        if beats(a, chosen):
            chosen = a
    return Choice(chosen.form, tuple(audits), tuple(failed))


def beats(rich: Audit, simple: Audit) -> bool:
    """Whether a form with more parameters predicts the held-out frontier runs better than a
    simpler one by more than noise: its ARE lower by PARSIMONY of the simpler's, and the mean
    of the runs' paired ARE differences above SIGNIFICANCE standard errors. A simpler form
    whose held-out ARE is within NOISE times the scatter of the richer fit (the relative RMSE
    of its frontier residuals: the runs' noise where either form is right, as the richer
    nests the simpler) already predicts as well as the runs allow: the held-out runs
    share one extrapolated curve, so their paired differences can be consistent, and look
    significant, while being no larger than the noise of single runs."""
    gain = np.array([s.are - r.are for s, r in zip(simple.scored, rich.scored, strict=True)])
    if not rich.are < simple.are * (1 - PARSIMONY):
        return False
    if simple.are <= NOISE * LN10 * float(rich.law.rmse):
        return False
    if len(gain) < 2:
        return True
    return bool(gain.mean() > SIGNIFICANCE * gain.std(ddof=1) / np.sqrt(len(gain)))
