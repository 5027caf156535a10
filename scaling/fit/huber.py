"""The Epoch way of fitting a nonlinear law (Besiroglu et al. 2024): the summed Huber loss
of log residuals, L-BFGS-B from a dense grid of starting points, the best converged run kept,
parameters never rounded.

A form gives its log prediction and its Jacobian, so every local run uses the exact
gradient (13 s instead of 74 s for Epoch's 4,500 starts on Chinchilla's 240 points). With
``top`` set, every start is first scored (cheap: one prediction each) and only the best
``top`` are optimised; the result says how many of them reached the best objective, which
is the evidence that the grid found the global minimum rather than a local one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scaling.errors import ClipscaleError

Array = NDArray[np.float64]
DELTA = 1e-3  # Epoch's δ, on natural-log residuals
REACHED_RTOL = 1e-6  # a start "reached" the best if its objective is this close
PARALLEL_FROM = 512  # starts optimised in worker processes from this many (when cores allow)

# log prediction and its Jacobian (p, n) at parameters θ for inputs x (one row per variable)
Predictor = Callable[[Array, Array], tuple[Array, Array]]


@dataclass(frozen=True)
class Problem:
    """What to fit: a form's predictor, its inputs, observed ln E, bounds, δ."""

    predict: Predictor
    x: Array  # (k, n): the form's input variables
    log_y: Array  # (n,) natural log of the observed error (or loss)
    bounds: tuple[tuple[float | None, float | None], ...]
    delta: float = DELTA

    def objective(self, theta: Array) -> tuple[float, Array]:
        """Summed Huber loss of ln y − ln ŷ and its gradient."""
        pred, jac = self.predict(theta, self.x)
        r = self.log_y - pred
        big = np.abs(r) > self.delta
        loss = np.where(big, self.delta * (np.abs(r) - 0.5 * self.delta), 0.5 * r * r)
        slope = np.where(big, self.delta * np.sign(r), r)
        return float(loss.sum()), -(jac @ slope)

    def value(self, theta: Array) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            v = self.objective(theta)[0]
        return v if np.isfinite(v) else np.inf


@dataclass(frozen=True)
class Solution:
    theta: Array
    objective: float
    converged: bool  # the best run's optimiser reported convergence
    reached: int  # local runs that ended within REACHED_RTOL of the best objective
    tried: int  # local runs
    grid: int  # starting points scored
    message: str
    basins: Array  # the best end of each other basin the local runs found, best first (k, p)


def local(problem: Problem, start: Array, tight: bool = False) -> tuple[Array, float, bool, str]:
    """One L-BFGS-B run (scipy's default tolerances, as Epoch ran it; ``tight`` polishes)."""
    from scipy.optimize import minimize  # here: a power law's OLS fit needs no scipy at all

    options = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000} if tight else {"maxiter": 15000}
    with _one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = minimize(problem.objective, start, jac=True, method="L-BFGS-B", bounds=problem.bounds,
                     options=options)  # fmt: skip
    ok = bool(r.success) and bool(np.all(np.isfinite(r.x))) and bool(np.isfinite(r.fun))
    return np.asarray(r.x, dtype=np.float64), float(r.fun) if ok else np.inf, ok, str(r.message)


_BLAS: Any = None  # threadpoolctl's view of the loaded BLAS libraries, made once


def _one_blas_thread() -> Any:
    """One BLAS thread for an L-BFGS-B run (on problems this small, more threads only spin on
    each other's cores: 10-30x slower on 2 cores); SciPy's own OpenBLAS is loaded first, as
    threadpoolctl limits only a loaded library."""
    global _BLAS
    if _BLAS is None:
        import scipy.optimize  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _local_many(problem: Problem, starts: Array) -> list[tuple[Array, float, bool, str]]:
    return [local(problem, s) for s in starts]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def solve(problem: Problem, grid: Array, top: int | None = None) -> Solution:
    """The best of L-BFGS-B runs from ``grid`` (every start, or the ``top`` best-scoring)."""
    grid = np.asarray(grid, dtype=np.float64)
    starts = grid
    if top is not None and top < len(grid):
        scores = np.array([problem.value(s) for s in grid])
        starts = grid[np.argsort(scores, kind="stable")[:top]]
    runs = _run(problem, starts)
    funs = np.array([f for _, f, _, _ in runs])
    if not np.isfinite(funs).any():
        raise ClipscaleError(f"the fit did not converge from any of {len(starts)} starting points")
    best = int(np.argmin(funs))
    theta, fun, ok, message = local(problem, runs[best][0], tight=True)  # polish: never stop early
    if not ok or fun > funs[best]:
        theta, fun, ok, message = runs[best]
    reached = int(np.sum(funs <= fun * (1 + REACHED_RTOL) + 1e-300))
    ends = np.array([runs[i][0] for i in np.argsort(funs, kind="stable") if np.isfinite(funs[i])])
    return Solution(theta, fun, ok, max(reached, 1), len(starts), len(grid), message, _basins(theta, ends))


BASIN = 0.5  # ends further apart than this (largest |Δθ|, in the forms' log units) are other basins
BASINS = 2  # other basins a bootstrap refit also starts from


def _basins(best: Array, ends: Array) -> Array:
    """Local minima other than the best, one per basin, best first: where a flat direction
    (a floor near zero, a break the data barely see) lets the optimum sit in one basin of
    several, a bootstrap refit started only at the optimum would never leave it."""
    kept: list[Array] = []
    for end in ends:
        if len(kept) == BASINS:
            break
        if all(np.max(np.abs(end - other)) > BASIN for other in (best, *kept)):
            kept.append(end)
    return np.array(kept).reshape(len(kept), len(best))


def _run(problem: Problem, starts: Array) -> list[tuple[Array, float, bool, str]]:
    workers = min(_cores(), 8)
    if len(starts) < PARALLEL_FROM or workers < 2:
        return _local_many(problem, starts)
    chunks = np.array_split(starts, workers)
    try:
        with ProcessPoolExecutor(workers, initializer=one_blas_thread) as pool:
            parts = list(pool.map(_local_many, [problem] * len(chunks), chunks))
    except (OSError, RuntimeError):  # no processes to be had (a sandbox): one core it is
        return _local_many(problem, starts)
    return [r for part in parts for r in part]


def one_blas_thread() -> None:
    """For a worker process of a pool of fits: one BLAS thread. OpenBLAS starts a thread per
    core in every process, and their spinning on the other workers' cores made 60 fits on
    two workers take 210 s instead of 38 s. SciPy brings an OpenBLAS of its own, which
    threadpoolctl limits only once it is loaded: so it is loaded first."""
    import scipy.optimize  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def grid_of(*axes: Sequence[float]) -> Array:
    """Every combination of the axes' values, one starting point a row."""
    mesh = np.meshgrid(*[np.asarray(a, dtype=np.float64) for a in axes], indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)
