"""E = β·C^α by least squares of log10 E on log10 C through a frontier, with bootstrap intervals.

The bootstrap resamples runs (with replacement) and refits the frontier each time, so the
intervals carry the uncertainty of which runs make the frontier, not only of the line.

With ``noise`` σ > 0 it is the seed-noise bootstrap instead (Porian et al. 2024): every
resample keeps every run and adds N(0, σ²) to its log10 error, σ being how much log10 error
moves between runs that differ only in their seed. Resampling a handful of runs draws
degenerate designs (a fifth of the resamples of five runs hold two distinct runs), so the
width of its interval swings with where each run happened to land; the seed-noise interval
depends on where the runs are and on σ, which is what planning the next run needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scaling.errors import ClipscaleError
from scaling.fit.frontier import METHODS, Array, batch_sums, frontier, ols_from_sums, sort_runs
from scaling.fit.resample import dense_counts, sparse_method, sparse_sums

CHUNK_CELLS = 2_000_000  # resamples × runs per batch: bounds memory (~16 MB a matrix)


@dataclass(frozen=True)
class FrontierPoint:
    compute: float  # where the point is fitted (a bin's centre for the binned frontier)
    error: float
    run: str  # the run that gave the point's error
    run_compute: float


@dataclass(frozen=True)
class Law:
    """A fitted law and its bootstrap: what `scaling fit` reports and `predict` extrapolates."""

    alpha: float
    beta: float
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    level: float
    r2: float  # of log10 E on log10 C through the frontier points
    rmse: float  # log10 residual through the frontier points
    n_runs: int
    method: str
    bins: int
    frontier: tuple[FrontierPoint, ...]
    n_boot: int
    boot_valid: int  # resamples whose frontier had two points to fit
    seed: int
    noise: float  # σ of the seed-noise bootstrap in log10 error; 0: runs resampled
    # Bootstrap draws of (α, log10 β), for predictions and comparisons.
    draws: Array = field(repr=False, compare=False, default_factory=lambda: np.empty((0, 2)))
    residuals: Array = field(repr=False, compare=False, default_factory=lambda: np.empty(0))  # log10

    name = "power"

    @property
    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta}

    @property
    def params_ci(self) -> dict[str, tuple[float, float]]:
        return {"alpha": self.alpha_ci, "beta": self.beta_ci}

    def log10_error(self, compute: Array) -> Array:
        return np.asarray(np.log10(self.beta) + self.alpha * np.log10(compute))

    def log10_draws(self, compute: Array) -> Array:
        """log10 E at each compute for each bootstrap law, shape (draws, n)."""
        return np.asarray(self.draws[:, :1] * np.log10(compute)[None, :] + self.draws[:, 1:])

    @property
    def formula(self) -> str:
        return f"E = {self.beta:.4g}·C^{self.alpha:.4f}"

    def predict(self, compute: float) -> tuple[float, tuple[float, float]]:
        """Error at ``compute`` GMACs and its interval at the law's level."""
        if not compute > 0:
            raise ClipscaleError(f"compute must be positive, got {compute:g}")
        lo, hi = self.error_band(np.array([compute]))[:, 0]
        return self.beta * compute**self.alpha, (float(lo), float(hi))

    def error_band(self, compute: Array) -> Array:
        """The interval of the error at each compute, shape (2, n): percentiles of the
        bootstrap laws at the law's level (NaN without draws)."""
        if len(self.draws) == 0:
            return np.full((2, len(compute)), np.nan)
        log_e = self.log10_draws(compute)
        tail = (1 - self.level) / 2 * 100
        return np.asarray(10 ** np.percentile(log_e, [tail, 100 - tail], axis=0))


def method_for(requested: str, n_runs: int, bins: int) -> str:
    """The frontier actually used: binning needs more runs than bins (the paper fits its
    three OpenAI CLIP runs through all points); each run would be alone in its bin, and
    moving a lone run to its bin's centre only distorts it."""
    if requested not in METHODS:
        raise ClipscaleError(f"unknown frontier {requested!r} (valid: {', '.join(METHODS)})")
    if requested == "binned" and n_runs <= bins:
        return "all"
    return requested


def fit_law(
    compute: Sequence[float] | Array,
    error: Sequence[float] | Array,
    runs: Sequence[str] | None = None,
    *,
    method: str = "binned",
    bins: int = 5,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    upper: float | None = 1.0,
    noise: float = 0.0,
) -> Law:
    """Fit E = β·C^α through the ``method`` frontier of the runs (compute in GMACs, error in
    (0, upper]: 1 for an error rate, None for a loss)."""
    c, e = np.asarray(compute, dtype=np.float64), np.asarray(error, dtype=np.float64)
    names = list(runs) if runs is not None else [str(i) for i in range(len(c))]
    check_runs(c, e, names, bins, n_boot, level, upper)
    method = method_for(method, len(c), bins)
    all_c, all_e = np.log10(c), np.log10(e)
    order = sort_runs(all_c, all_e)
    log_c, log_e = all_c[order], all_e[order]
    front = frontier(log_c, log_e, method, bins)
    if len(front.log_c) < 2 or np.ptp(front.log_c) == 0:
        raise ClipscaleError(f"the {method} frontier has {len(front.log_c)} point(s): a law needs two")
    slope, intercept = least_squares_line(front.log_c, front.log_e)
    residual = front.log_e - (intercept + slope * front.log_c)
    draws = bootstrap(log_c, log_e, method, bins, n_boot, seed, noise)
    alpha_ci = percentile_interval(draws[:, 0], level)
    lb_ci = percentile_interval(draws[:, 1], level)
    points = tuple(
        FrontierPoint(float(10**x), float(10**y), names[order[i]], float(c[order[i]]))
        for x, y, i in zip(front.log_c, front.log_e, front.runs, strict=True)
    )
    return Law(
        alpha=float(slope), beta=float(10**intercept), alpha_ci=alpha_ci,
        beta_ci=(10 ** lb_ci[0], 10 ** lb_ci[1]), level=level,
        r2=_r2(front.log_e, residual), rmse=float(np.sqrt(np.mean(residual**2))),
        n_runs=len(c), method=method, bins=bins, frontier=points, n_boot=n_boot,
        boot_valid=len(draws), seed=seed, noise=noise, draws=draws, residuals=residual,
    )  # fmt: skip


def least_squares_line(x: Array, y: Array) -> tuple[float, float]:
    """Slope and intercept of the least-squares line, as scipy's linregress computes them
    (scipy.stats alone takes half a second to import: `scaling fit` needs none of it)."""
    dx, dy = x - x.mean(), y - y.mean()
    slope = float(np.mean(dx * dy) / np.mean(dx * dx))
    return slope, float(y.mean() - slope * x.mean())


def _r2(y: Array, residual: Array) -> float:
    # Frontier points of equal error (runs still at chance) are fitted exactly by a flat line.
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum(residual**2)) / total if total > 0 else 1.0


def bootstrap(
    log_c: Array, log_e: Array, method: str, bins: int, n_boot: int, seed: int, noise: float = 0.0
) -> Array:
    """(α, log10 β) of each resample whose frontier could be fitted, shape (≤ n_boot, 2):
    runs resampled, or (``noise`` > 0) every run kept with seed noise added."""
    n = len(log_c)
    rng = np.random.default_rng(seed)
    shift = float(log_c.mean())  # centred compute keeps the sums well conditioned
    x = log_c - shift
    if sparse_method(method, n, noise):  # many runs: draws only where a frontier can be
        sums = [sparse_sums(x, log_e, method, bins, n_boot, rng, CHUNK_CELLS)]
    else:
        sums = []
        chunk = max(1, CHUNK_CELLS // n)
        for start in range(0, n_boot, chunk):
            size = min(chunk, n_boot - start)
            if noise > 0:
                counts = np.ones((size, n), dtype=np.int64)
                rows = log_e[None, :] + rng.normal(0.0, noise, size=(size, n))
            else:
                counts, rows = dense_counts(rng, n, size), log_e
            sums.append(batch_sums(x, rows, counts, method, bins))
    slope, intercept, _ = ols_from_sums(np.concatenate(sums) if sums else np.empty((0, 5)))
    draws = np.stack([slope, intercept - slope * shift], axis=1)
    return draws[np.isfinite(draws[:, 0])]


def percentile_interval(values: Array, level: float) -> tuple[float, float]:
    if len(values) == 0:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def check_runs(
    c: Array, e: Array, names: list[str], bins: int, n_boot: int, level: float, upper: float | None
) -> None:
    if len(c) != len(e) or len(names) != len(c):
        raise ClipscaleError("compute, error and run names differ in length")
    bad_c = np.flatnonzero(~(np.isfinite(c) & (c > 0)))
    if bad_c.size:
        raise ClipscaleError(f"run {names[bad_c[0]]}: compute must be positive, got {c[bad_c[0]]:g}")
    bad_e = np.flatnonzero(~(np.isfinite(e) & (e > 0) & (e <= (np.inf if upper is None else upper))))
    if bad_e.size:
        where = "(0, 1]" if upper == 1 else ("(0, ∞)" if upper is None else f"(0, {upper:g}]")
        raise ClipscaleError(f"run {names[bad_e[0]]}: error {e[bad_e[0]]:g} is outside {where}")
    if len(c) < 2:
        raise ClipscaleError(f"{len(c)} run(s): a law needs at least two")
    if np.unique(c).size < 2:
        raise ClipscaleError(f"all {len(c)} runs have the same compute ({c[0]:.4g} GMACs): a law needs two")
    if bins < 1 or n_boot < 0 or not 0 < level < 1:
        raise ClipscaleError("bins must be ≥ 1, boot ≥ 0 and level in (0, 1)")
