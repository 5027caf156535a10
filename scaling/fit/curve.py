"""A law of error against compute in any nonlinear form (floor, saturating, broken), fitted
the Epoch way through a frontier, with bootstrap intervals and its sensitivity to δ.

The bootstrap resamples runs, rebuilds the frontier and refits from the full fit's optimum,
as Epoch's replication does from its point estimate; a resample whose frontier is too short
for the form is left out (``boot_valid`` says how many remained).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scaling.errors import ClipscaleError
from scaling.fit.form import Form
from scaling.fit.frontier import frontier, sort_runs
from scaling.fit.huber import DELTA, Array, Problem, local, solve
from scaling.fit.powerlaw import FrontierPoint, check_runs, method_for, percentile_interval

LN10 = float(np.log(10.0))
SENSITIVITY = (1e-4, 1e-2)  # the other δ a fit is repeated at, around Epoch's 1e-3


@dataclass(frozen=True)
class Curve:
    """A fitted nonlinear law: parameters in the family's units, intervals, convergence."""

    form: Form
    params: dict[str, float]
    params_ci: dict[str, tuple[float, float]]
    level: float
    r2: float
    rmse: float  # log10 residual through the frontier points
    n_runs: int
    method: str
    bins: int
    frontier: tuple[FrontierPoint, ...]
    n_boot: int
    boot_valid: int
    seed: int
    noise: float  # σ of the seed-noise bootstrap in log10 error (see powerlaw); 0: runs resampled
    objective: float  # summed Huber loss at the optimum
    delta: float
    converged: bool
    reached: int  # of `tried` local runs, how many ended at the best objective
    tried: int
    grid: int
    sensitivity: dict[float, dict[str, float]]  # δ → parameters refitted at that δ
    theta: Array = field(repr=False, compare=False)
    ref: Array = field(repr=False, compare=False)  # ln C_ref the inputs were centred on
    residuals: Array = field(repr=False, compare=False)  # log10, through the frontier points
    draws: Array = field(repr=False, compare=False)  # bootstrap θ, one a row

    @property
    def name(self) -> str:
        return self.form.name

    @property
    def formula(self) -> str:
        return self.form.formula(self.params)

    def log10_error(self, compute: Array, theta: Array | None = None) -> Array:
        u = np.log(np.asarray(compute, dtype=np.float64)) - self.ref[0]
        pred, _ = self.form.predict(self.theta if theta is None else theta, u[None, :])
        return np.asarray(pred / LN10)

    def log10_draws(self, compute: Array) -> Array:
        """log10 E at each compute for each bootstrap law, shape (draws, n)."""
        n = np.size(compute)
        return np.array([self.log10_error(compute, t) for t in self.draws]).reshape(len(self.draws), n)

    def predict(self, compute: float) -> tuple[float, tuple[float, float]]:
        if not compute > 0:
            raise ClipscaleError(f"compute must be positive, got {compute:g}")
        lo, hi = self.error_band(np.array([compute]))[:, 0]
        return float(10 ** self.log10_error(np.array([compute]))[0]), (float(lo), float(hi))

    def error_band(self, compute: Array) -> Array:
        return band(self, np.asarray(compute, dtype=np.float64), self.level)


def band(law: object, compute: Array, level: float, predictive: bool = False, seed: int = 0) -> Array:
    """The interval of E at each compute, shape (2, n): percentiles of the bootstrap laws; with
    ``predictive``, each law's prediction plus a residual of the fit drawn at random (scaled
    up for the parameters fitted), so it covers a new run at that compute, not only the law."""
    draws: Array = law.log10_draws(compute)  # type: ignore[attr-defined]
    if len(draws) == 0:
        return np.full((2, len(compute)), np.nan)
    if predictive:
        res: Array = law.residuals  # type: ignore[attr-defined]
        p = len(law.params)  # type: ignore[attr-defined]
        scale = np.sqrt(len(res) / max(len(res) - p, 1))
        rng = np.random.default_rng(seed)
        draws = draws + (rng.choice(res - res.mean(), size=draws.shape) * scale if len(res) else 0.0)
    tail = (1 - level) / 2 * 100
    return np.asarray(10 ** np.percentile(draws, [tail, 100 - tail], axis=0))


def fit_curve(
    form: Form,
    compute: Sequence[float] | Array,
    error: Sequence[float] | Array,
    runs: Sequence[str] | None = None,
    *,
    method: str = "geometric",
    bins: int = 5,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    delta: float = DELTA,
    top: int | None = -1,
    upper: float | None = None,
    noise: float = 0.0,
) -> Curve:
    """Fit ``form`` through the ``method`` frontier of the runs (compute > 0, error in
    (0, upper]: 1 for an error rate, None for a loss). ``top``: starting points optimised
    after scoring the grid (None: all; -1: the form's)."""
    c, e = np.asarray(compute, dtype=np.float64), np.asarray(error, dtype=np.float64)
    names = list(runs) if runs is not None else [str(i) for i in range(len(c))]
    check_runs(c, e, names, bins, n_boot, level, upper)
    if not delta > 0:
        raise ClipscaleError(f"delta must be positive, got {delta:g}")
    method = method_for(method, len(c), bins)
    all_c, all_e = np.log10(c), np.log10(e)
    order = sort_runs(all_c, all_e)
    log_c, log_e = all_c[order], all_e[order]
    front = frontier(log_c, log_e, method, bins)
    need = form.min_points()
    if len(front.log_c) < need:
        raise ClipscaleError(
            f"the {method} frontier has {len(front.log_c)} point(s): the {form.name} law needs {need}"
        )
    ref = np.array([float(np.mean(front.log_c)) * LN10])
    problem = _problem(form, front.log_c, front.log_e, ref, delta)
    sol = solve(problem, form.starts(problem.x, problem.log_y), form.top if top == -1 else top)
    if not sol.converged:
        raise ClipscaleError(f"the {form.name} law did not converge ({sol.message})")
    pred = problem.predict(sol.theta, problem.x)[0] / LN10
    residual = front.log_e - pred
    starts = np.vstack([sol.theta[None, :], sol.basins])
    draws = _bootstrap(form, log_c, log_e, method, bins, ref, delta, starts, n_boot, seed, noise)
    natural = [form.natural(t, ref) for t in draws]
    params = form.natural(sol.theta, ref)
    sensitivity = {}
    for d in SENSITIVITY:
        theta, _, ok, _ = local(_problem(form, front.log_c, front.log_e, ref, d), sol.theta, tight=True)
        if ok:
            sensitivity[d] = form.natural(theta, ref)
    points = tuple(
        FrontierPoint(float(10**x), float(10**y), names[order[i]], float(c[order[i]]))
        for x, y, i in zip(front.log_c, front.log_e, front.runs, strict=True)
    )
    total = float(np.sum((front.log_e - front.log_e.mean()) ** 2))
    return Curve(
        form=form, params=params,
        params_ci={k: percentile_interval(np.array([n[k] for n in natural]), level) for k in params},
        level=level, r2=1.0 - float(np.sum(residual**2)) / total if total > 0 else 1.0,
        rmse=float(np.sqrt(np.mean(residual**2))), n_runs=len(c), method=method, bins=bins,
        frontier=points, n_boot=n_boot, boot_valid=len(draws), seed=seed, noise=noise,
        objective=sol.objective, delta=delta, converged=sol.converged, reached=sol.reached,
        tried=sol.tried, grid=sol.grid, sensitivity=sensitivity, theta=sol.theta, ref=ref,
        residuals=residual, draws=draws,
    )  # fmt: skip


def _problem(form: Form, log10_c: Array, log10_e: Array, ref: Array, delta: float) -> Problem:
    u = log10_c * LN10 - ref[0]
    return Problem(form.predict, u[None, :], log10_e * LN10, form.bounds, delta)


def _bootstrap(
    form: Form, log_c: Array, log_e: Array, method: str, bins: int, ref: Array, delta: float,
    starts: Array, n_boot: int, seed: int, noise: float = 0.0,
) -> Array:  # fmt: skip
    """Refits on resampled runs (or, ``noise`` > 0, on every run with seed noise added) from
    the optimum and from the other basins' best ends (see huber.BASINS); the best of them is
    then polished to convergence."""
    rng = np.random.default_rng(seed)
    n, need, out = len(log_c), form.min_points(), []
    for _ in range(n_boot):
        if noise > 0:
            noisy = log_e + rng.normal(0.0, noise, n)
            idx = sort_runs(log_c, noisy)
            front = frontier(log_c[idx], noisy[idx], method, bins)
        else:
            idx = np.sort(rng.integers(0, n, n))  # the runs are sorted: a sorted draw stays sorted
            front = frontier(log_c[idx], log_e[idx], method, bins)
        if len(front.log_c) < need:
            continue
        problem = _problem(form, front.log_c, front.log_e, ref, delta)
        ends = [local(problem, s) for s in starts]
        best = min((e for e in ends if e[2]), key=lambda e: e[1], default=None)
        if best is None:
            continue
        t, fun, ok, _ = local(problem, best[0], tight=True)  # then to convergence: never stop early
        out.append(t if ok and fun <= best[1] else best[0])
    return np.array(out).reshape(len(out), form.n_params)
