"""Frontiers of error against compute, for one set of runs or a batch of bootstrap resamples.

Everything works in log10 space on runs sorted by (compute, error). A batch is a matrix of
per-run counts (one row per resample): the binned and Pareto frontiers depend only on which
runs are present, plain least squares through all runs on how often each is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

METHODS = ("binned", "pareto", "geometric", "hull", "all")
GEOMETRIC_WIDTH = float(np.log10(2.0))  # one bin per doubling of compute (LAION 2025)
Array = NDArray[np.float64]


@dataclass(frozen=True)
class Frontier:
    """The points a law is fitted through: positions in log10 space and the run each came from."""

    log_c: Array
    log_e: Array
    runs: NDArray[np.intp]  # index into the sorted runs


def sort_runs(log_c: Array, log_e: Array) -> NDArray[np.intp]:
    """Order by compute, then error: the Pareto scan and tie-breaking rely on it."""
    if len(log_c) > 1 and bool(np.all(log_c[1:] > log_c[:-1])):
        return np.arange(len(log_c))  # the store's order (by compute) with no ties: sorted already
    return np.lexsort((log_e, log_c))


def bin_edges(lo: Array, hi: Array, bins: int) -> Array:
    """np.histogram's edges over [lo, hi + 0.1] for each row, computed as its linspace does."""
    last = hi + 0.1
    step = (last - lo) / bins
    edges = np.arange(bins + 1, dtype=np.float64)[None, :] * step[:, None] + lo[:, None]
    edges[:, -1] = last
    return edges


def frontier(log_c: Array, log_e: Array, method: str, bins: int = 5) -> Frontier:
    """The frontier of runs already sorted by :func:`sort_runs`.

    ``binned`` is the paper's: ``bins`` equal-width bins of log10 C over [min, max + 0.1],
    the lowest log10 E of each placed at the bin's centre, empty bins dropped. ``pareto``
    keeps each run whose error is below that of every run of less compute; ``all`` keeps
    every run. ``geometric`` is LAION 2025's: bins one doubling of compute wide, the best run
    of each at its own compute, kept only where its error is below every kept run before it
    (a monotone decrease). ``hull``: the lower convex hull of the runs in log-log, up to its
    lowest error.
    """
    n = len(log_c)
    if method == "geometric":
        return _geometric(log_c, log_e)
    if method == "hull":
        return _hull(log_c, log_e)
    if method == "all":
        return Frontier(log_c, log_e, np.arange(n))
    if method == "pareto":
        before = np.concatenate(([np.inf], np.minimum.accumulate(log_e)[:-1]))
        keep = np.flatnonzero(log_e < before)
        return Frontier(log_c[keep], log_e[keep], keep)
    edges = bin_edges(np.array([log_c.min()]), np.array([log_c.max()]), bins)[0]
    xs, ys, idx = [], [], []
    for i in range(bins):
        inside = np.flatnonzero((log_c >= edges[i]) & (log_c < edges[i + 1]))
        if inside.size:
            best = inside[np.argmin(log_e[inside])]
            xs.append((edges[i] + edges[i + 1]) / 2)
            ys.append(log_e[best])
            idx.append(best)
    return Frontier(np.array(xs), np.array(ys), np.array(idx, dtype=np.intp))


def _geometric(log_c: Array, log_e: Array) -> Frontier:
    which = np.floor((log_c - log_c.min()) / GEOMETRIC_WIDTH).astype(np.int64)
    keep: list[int] = []
    for b in np.unique(which):
        inside = np.flatnonzero(which == b)
        best = int(inside[np.argmin(log_e[inside])])
        if not keep or log_e[best] < log_e[keep[-1]]:
            keep.append(best)
    idx = np.array(keep, dtype=np.intp)
    return Frontier(log_c[idx], log_e[idx], idx)


def _hull(log_c: Array, log_e: Array) -> Frontier:
    # The decreasing part of the lower hull lies on the Pareto runs (a run with a better run
    # of less compute is above the hull's falling edge there): the chain goes through those.
    before = np.concatenate(([np.inf], np.minimum.accumulate(log_e)[:-1]))
    lower: list[int] = []  # Andrew's monotone chain over runs sorted by (compute, error)
    for i in np.flatnonzero(log_e < before).tolist():
        while len(lower) >= 2 and _cross(log_c, log_e, lower[-2], lower[-1], i) <= 0:
            lower.pop()
        lower.append(i)
    idx = np.array(lower, dtype=np.intp)
    idx = idx[: int(np.argmin(log_e[idx])) + 1]  # the decreasing part: past the lowest error it rises
    return Frontier(log_c[idx], log_e[idx], idx)


def _cross(x: Array, y: Array, o: int, a: int, b: int) -> float:
    return float((x[a] - x[o]) * (y[b] - y[o]) - (y[a] - y[o]) * (x[b] - x[o]))


def batch_sums(log_c: Array, log_e: Array, counts: NDArray[np.int64], method: str, bins: int) -> Array:
    """Least-squares sums (n, Σx, Σy, Σxx, Σxy) of each resample's frontier, shape (B, 5).

    ``counts[b, i]`` is how often resample ``b`` drew run ``i`` (runs sorted by sort_runs).
    ``log_e`` is one error per run, or one row per resample (the seed-noise bootstrap's).
    """
    rows_e = np.broadcast_to(log_e, counts.shape)
    if method == "all":
        return _sums(counts.astype(np.float64), log_c[None, :], rows_e)
    present = counts > 0
    if method == "hull":  # the hull lies on the Pareto runs: those of every resample at once
        present = _pareto(np.where(present, rows_e, np.inf))
    if method in ("geometric", "hull"):  # no closed form over a batch: one frontier a resample
        rows = []
        for row, y in zip(present, rows_e, strict=True):
            keep = np.flatnonzero(row)
            f = frontier(log_c[keep], y[keep], method)
            rows.append(frontier_sums(f))
        return np.array(rows).reshape(len(counts), 5)
    if method == "pareto":
        front = _pareto(np.where(present, rows_e, np.inf))
        return _sums(front.astype(np.float64), log_c[None, :], rows_e)
    # Binned: per-row edges from the runs the resample drew, then each bin's minimum.
    lo = np.where(present, log_c[None, :], np.inf).min(axis=1)
    hi = np.where(present, log_c[None, :], -np.inf).max(axis=1)
    edges = bin_edges(lo, hi, bins)
    ys = np.empty((len(counts), bins))
    for i in range(bins):
        inside = (
            present & (log_c[None, :] >= edges[:, i : i + 1]) & (log_c[None, :] < edges[:, i + 1 : i + 2])
        )
        ys[:, i] = np.where(inside, rows_e, np.inf).min(axis=1)
    return binned_sums(edges, ys)


def binned_sums(edges: Array, minima: Array) -> Array:
    """Least-squares sums of binned frontiers: each bin's lowest error (+inf: an empty bin,
    left out) at the bin's centre, one row per resample."""
    filled = np.isfinite(minima)
    centres = (edges[:, :-1] + edges[:, 1:]) / 2
    return _sums(filled.astype(np.float64), centres, np.where(filled, minima, 0.0))


def frontier_sums(f: Frontier) -> Array:
    """Least-squares sums of one frontier's points, shape (5,)."""
    return _sums(np.ones((1, len(f.log_c))), f.log_c[None, :], f.log_e[None, :])[0]


def _pareto(y: Array) -> NDArray[np.bool_]:
    """Each row's runs below every run before them (absent runs: +inf)."""
    running = np.minimum.accumulate(y, axis=1)
    return np.asarray(y < np.concatenate([np.full((len(y), 1), np.inf), running[:, :-1]], axis=1))


def _sums(w: Array, x: Array, y: Array) -> Array:
    wx, wy = w * x, w * y
    return np.stack([w.sum(1), wx.sum(1), wy.sum(1), (wx * x).sum(1), (wx * y).sum(1)], axis=1)


def ols_from_sums(s: Array) -> tuple[Array, Array, Array]:
    """Slope, intercept and the number of distinct fitted points' weight per row; NaN where a
    row has fewer than two points or no spread in compute."""
    n, sx, sy, sxx, sxy = s.T
    var = n * sxx - sx * sx
    ok = (n >= 2) & (var > 1e-12 * np.maximum(n * sxx, 1e-300))
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(ok, (n * sxy - sx * sy) / var, np.nan)
        intercept = np.where(ok, (sy - slope * sx) / n, np.nan)
    return slope, intercept, n
