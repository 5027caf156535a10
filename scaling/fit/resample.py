"""Bootstrap frontiers of many runs, drawn only where a resample's frontier can be.

A resample of n runs is n draws with replacement: with tens of thousands of runs, 1,000
resamples are tens of millions of counts, although each frontier is a few dozen runs low in
error. The draws are split, exactly: how many of the n land among a set S of candidate runs
(binomial), which candidates they hit (uniform), and (only for a resample that needs them)
the draws outside S (uniform over the rest). The first two give each resample's frontier of
the candidates present. That frontier is the resample's own when no run outside S could
change it, whichever of them were drawn: every stretch of compute the frontier holds at some
error (a bin's lowest, or the running minimum of the Pareto scan) has no run outside S below
that error, and no run outside S lies where the frontier holds none (before the first
candidate drawn, in an empty bin). A range minimum over the runs outside S answers that for
a whole batch at once. A resample it does not certify is completed with its draws outside S
and computed whole, so the bootstrap's distribution is the dense one's, with any S.

S holds the runs that are beaten by few others: for bins, the lowest few of each thin slice
of compute, and beside each edge (which moves with the least and most compute drawn) the
runs with few lower ones between them and where it can fall; for the Pareto scan and the
hull, its first few layers; and the few runs of least and most compute. A run outside S has
many better runs near it, and is the frontier of a resample only if all of them were missed,
about e^-12 of the time; the check finds those resamples, and they are completed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from scaling.fit.frontier import (
    GEOMETRIC_WIDTH,
    Array,
    _pareto,
    _sums,
    batch_sums,
    bin_edges,
    binned_sums,
    frontier,
    frontier_sums,
)

SPARSE_MIN = 4096  # fewer runs: the dense matrix of counts is cheap, and the draws stay as they were
DEPTH = 12  # a run beaten by this many nearby runs is a frontier's only if all 12 were missed
SLICES_PER_BIN = 6  # a bin is wider than an edge band and two slices each side
EDGE_DRAWS = 8  # a resample's least compute is one of the 9 least runs' but in e^-9 of them
EDGE_SLACK = 1e-9  # log10 compute: far above rounding, far below any two runs' distinct computes
SPARSE_SHARE = 0.25  # more candidates than this share of the runs: the dense draws are as cheap
Index = NDArray[np.intp]


def sparse_method(method: str, n: int, noise: float) -> bool:
    """Whether a bootstrap of n runs draws sparsely: many runs, runs resampled (seed noise
    moves every run), and a frontier that a few runs make (``all`` keeps every run)."""
    return n >= SPARSE_MIN and noise == 0 and method in ("binned", "pareto", "geometric", "hull")


def candidates(x: Array, y: Array, method: str, bins: int) -> Index:
    """S: the runs (sorted by compute, then error) that a resample's frontier is likely made of."""
    n = len(x)
    keep = np.zeros(n, dtype=bool)
    keep[:DEPTH] = keep[-DEPTH:] = True
    if method in ("pareto", "hull"):
        keep |= _layers(y, DEPTH)
    else:
        width = (GEOMETRIC_WIDTH if method == "geometric" else (np.ptp(x) + 0.1) / bins) / SLICES_PER_BIN
        keep |= _slice_lows(x, y, width, DEPTH)
        for lo, hi in _edge_bands(x, method, bins):
            keep |= _near_edge(x, y, lo, hi, width)
    return np.flatnonzero(_with_twins(x, y, keep))


def _edge_bands(x: Array, method: str, bins: int) -> list[tuple[float, float]]:
    """Where each inner edge of a resample's bins falls but in about one resample in ten
    thousand: the edges move with the least (and, binned, the most) compute drawn, which is
    one of the EDGE_DRAWS + 1 runs at either end but in e^-9 of them (those may find a bin's
    lowest run outside S, and are completed)."""
    n, d = len(x), min(EDGE_DRAWS, len(x) - 1)
    if method == "geometric":
        count = int(np.floor((x[-1] - x[0]) / GEOMETRIC_WIDTH)) + 1
        return [(x[0] + b * GEOMETRIC_WIDTH, x[d] + b * GEOMETRIC_WIDTH) for b in range(1, count + 1)]
    # An edge is lo·(1 − j/bins) + (hi + 0.1)·j/bins: it grows with both ends.
    return [(x[0] * (1 - j / bins) + (x[n - 1 - d] + 0.1) * j / bins,
             x[d] * (1 - j / bins) + (x[n - 1] + 0.1) * j / bins) for j in range(1, bins)]  # fmt: skip


def _near_edge(x: Array, y: Array, lo: float, hi: float, width: float) -> NDArray[np.bool_]:
    """Runs that can be the lowest of a bin with an edge somewhere in [lo, hi] (bins are
    wider than the band and two ``width`` each side). The bin ending there holds all from two
    ``width`` before the band to the edge: a run within ``width`` before the band must have
    few lower runs before it from there and few between it and the band; a run in the band
    few before it. The bin starting there, mirrored."""
    keep = np.zeros(len(x), dtype=bool)
    edges = [lo - 2 * width, lo - width, lo - EDGE_SLACK, hi + EDGE_SLACK, hi + width, hi + 2 * width]
    a0, a, b, c, d, d0 = np.searchsorted(x, edges, side="left")
    keep[a:b] = _layers_back(y[a:b]) & _layers(y[a0:b], DEPTH)[a - a0 :]
    keep[b:c] = _layers(y[a:c], DEPTH)[b - a :] | _layers_back(y[b:d])[: c - b]
    keep[c:d] = _layers(y[c:d], DEPTH) & _layers_back(y[c:d0])[: d - c]
    return keep


def _layers_back(y: Array) -> NDArray[np.bool_]:
    """The first DEPTH layers of the scan from the end: runs with few lower runs after them."""
    return _layers(y[::-1], DEPTH)[::-1]


def _with_twins(x: Array, y: Array, keep: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Runs of the same compute and error go together: a frontier takes the first of them,
    and a twin left outside S would tie with the run inside it (the strict check fails)."""
    starts = np.flatnonzero(np.concatenate(([True], (x[1:] != x[:-1]) | (y[1:] != y[:-1]))))
    group = np.maximum.reduceat(keep, starts)
    return np.repeat(group, np.diff(np.append(starts, len(x))))


def _layers(y: Array, depth: int) -> NDArray[np.bool_]:
    """The first ``depth`` Pareto layers: the scan's frontier, then that of the runs left, …"""
    taken = np.zeros(len(y), dtype=bool)
    rest = np.arange(len(y))
    for _ in range(depth):
        if rest.size == 0:
            break
        ys = y[rest]
        front = np.empty(len(ys), dtype=bool)
        front[0] = True
        np.less(ys[1:], np.minimum.accumulate(ys)[:-1], out=front[1:])
        taken[rest[front]] = True
        rest = rest[~front]
    return taken


def _slice_lows(x: Array, y: Array, width: float, depth: int) -> NDArray[np.bool_]:
    """The ``depth`` lowest errors of each slice of compute ``width`` wide (x is sorted, so a
    slice is a stretch of positions; of tied errors, the first)."""
    which = np.floor((x - x[0]) / width).astype(np.int64) if width > 0 else np.zeros(len(x), np.int64)
    bounds = np.flatnonzero(np.diff(which)) + 1
    keep = np.zeros(len(x), dtype=bool)
    for a, b in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(x)])), strict=True):
        ys = y[a:b]
        if b - a <= depth:
            keep[a:b] = True
            continue
        level = np.partition(ys, depth - 1)[depth - 1]  # the depth-th lowest error
        below = ys < level
        tied = np.flatnonzero(ys == level)[: depth - int(below.sum())]
        keep[a:b] = below
        keep[a + tied] = True
    return keep


class RangeMin:
    """Minimum of the errors of the runs outside S over any range of sorted positions
    (a sparse table: each query is two lookups)."""

    def __init__(self, y: Array, chosen: Index) -> None:
        v = y.astype(np.float64).copy()
        v[chosen] = np.inf
        rows = [v]
        step = 1
        while 2 * step <= len(v):
            prev = rows[-1]
            nxt = np.full(len(v), np.inf)
            nxt[: len(v) - step] = np.minimum(prev[: len(v) - step], prev[step:])
            rows.append(nxt)
            step *= 2
        self.table = np.stack(rows)

    def query(self, lo: Index, hi: Index) -> Array:
        """min over positions [lo, hi) for each pair; +inf where the range is empty."""
        lo, hi = np.asarray(lo), np.asarray(hi)
        length = hi - lo
        out = np.full(len(lo), np.inf)
        ok = length > 0
        k = np.floor(np.log2(np.maximum(length[ok], 1))).astype(np.intp)
        a, b = lo[ok], hi[ok] - (1 << k)
        out[ok] = np.minimum(self.table[k, a], self.table[k, b])
        return out


def draw(rng: np.random.Generator, n: int, k: int, size: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Counts of the k candidates in each of ``size`` resamples of n draws, and how many of
    the n draws landed among them."""
    hits = rng.binomial(n, k / n, size)
    picks = rng.integers(0, k, int(hits.sum()))
    picks += np.repeat(np.arange(0, size * k, k), hits)  # each resample's own row of k cells
    counts = np.bincount(picks, minlength=size * k).reshape(size, k)
    return counts, hits


def complete(
    rng: np.random.Generator, n: int, chosen: Index, counts: NDArray[np.int64], hits: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Whole resamples: the candidates' counts, and the other draws over the runs outside S."""
    rest = np.setdiff1d(np.arange(n), chosen)
    full = np.zeros((len(counts), n), dtype=np.int64)
    full[:, chosen] = counts
    for row, missing in enumerate(n - hits):
        np.add.at(full[row], rest[rng.integers(0, len(rest), int(missing))], 1)
    return full


def certified_sums(
    x: Array, y: Array, chosen: Index, counts: NDArray[np.int64], method: str, bins: int, ranges: RangeMin
) -> tuple[Array, NDArray[np.bool_]]:
    """Least-squares sums of each resample's frontier of the candidates present (as
    frontier.batch_sums gives them), and whether that frontier is the resample's own."""
    present = counts > 0
    if method == "binned":
        sums, claims = _binned(x, y, chosen, present, bins)
    elif method == "geometric":
        sums, claims = _geometric(x, y, chosen, present)
    else:
        sums, claims = _scan(x, y, chosen, present, method)
    rows, lo, hi, level, strict = claims
    low = ranges.query(lo, hi)
    held = (low > level) | np.isinf(low) if strict else low >= level
    ok = np.asarray(present.any(axis=1))
    ok[rows[~held]] = False
    return sums, ok


Claims = tuple[Index, Index, Index, Array, bool]  # row, positions [lo, hi), level, strictly above


def _first_last(chosen: Index, present: NDArray[np.bool_]) -> tuple[Index, Index]:
    """Sorted positions of each resample's first and last candidate drawn (0 where none)."""
    k = present.shape[1]
    first = np.where(present.any(axis=1), present.argmax(axis=1), 0)
    last = np.where(present.any(axis=1), k - 1 - present[:, ::-1].argmax(axis=1), 0)
    return chosen[first], chosen[last]


def _binned(x: Array, y: Array, chosen: Index, present: NDArray[np.bool_], bins: int) -> tuple[Array, Claims]:
    """The paper's bins: edges from the least and most compute drawn, each bin's lowest error."""
    size, xs, ys = len(present), x[chosen], y[chosen]
    first, last = _first_last(chosen, present)
    edges = bin_edges(x[first], x[last], bins)
    level = _bin_minima(np.where(present, ys[None, :], np.inf), np.searchsorted(xs, edges, side="left"))
    sums = binned_sums(edges, level)
    at = np.searchsorted(x, edges.ravel(), side="left").reshape(size, bins + 1)
    rows, n = np.arange(size), len(x)
    # Nothing outside S before the first candidate drawn or after the last (the edges would
    # move), and nothing outside S in a bin below that bin's lowest error.
    claims = (np.concatenate([rows, rows, np.repeat(rows, bins)]),
              np.concatenate([np.zeros(size, np.intp), last + 1, at[:, :-1].ravel()]),
              np.concatenate([first, np.full(size, n), at[:, 1:].ravel()]),
              np.concatenate([np.full(2 * size, np.inf), level.ravel()]), False)  # fmt: skip
    return sums, claims


def _bin_minima(masked: Array, cols: Index) -> Array:
    """Each row's minimum over each bin's columns [cols[:, i], cols[:, i + 1]), in one pass
    (ufunc.reduceat over the flattened rows); +inf for an empty bin. Between a row's last
    edge and the next row's first, every column is a run not drawn (+inf already)."""
    size, k = masked.shape
    bins = cols.shape[1] - 1
    offset = np.arange(size)[:, None] * k
    start, stop = (offset + cols[:, :-1]).ravel(), (offset + cols[:, 1:]).ravel()
    reduced = np.minimum.reduceat(np.append(masked.ravel(), np.inf), start)
    return np.where(stop > start, reduced, np.inf).reshape(size, bins)


def _scan(x: Array, y: Array, chosen: Index, present: NDArray[np.bool_], method: str) -> tuple[Array, Claims]:
    """The Pareto scan (and the hull, which lies on it): each stretch between frontier runs
    holds the running minimum; nothing outside S may lie before the first run drawn."""
    size, n = len(present), len(x)
    ys = np.where(present, y[chosen][None, :], np.inf)
    front = _pareto(ys)
    rows, cols = np.nonzero(front)
    pos = chosen[cols]
    last_of_row = np.append(rows[1:] != rows[:-1], True)
    nxt = np.where(last_of_row, n, np.append(pos[1:], n))
    first, _ = _first_last(chosen, present)
    if method == "hull":  # the chain through each resample's Pareto runs
        sums = np.zeros((size, 5))
        starts = np.flatnonzero(np.append(True, last_of_row[:-1]))
        for r, keep in zip(rows[starts], np.split(pos, starts[1:]), strict=True):
            sums[r] = frontier_sums(frontier(x[keep], y[keep], "hull"))
    else:
        sums = _sums(front.astype(np.float64), x[chosen][None, :], np.where(front, ys, 0.0))
    starts_at = np.concatenate([np.zeros(size, np.intp), pos + 1])
    claims = (np.concatenate([np.arange(size), rows]), starts_at, np.concatenate([first, nxt]),
              np.concatenate([np.full(size, np.inf), y[pos]]), False)  # fmt: skip
    return sums, claims


def _geometric(x: Array, y: Array, chosen: Index, present: NDArray[np.bool_]) -> tuple[Array, Claims]:
    """LAION 2025's bins, one doubling of compute wide from the least compute drawn: each
    bin's lowest run must be the lowest of the resample's runs there, ties included (its own
    compute is fitted), so the check is strict, and each bin's range reaches a little past its
    edges (floor() and a comparison may place a run on an edge differently)."""
    size = len(present)
    sums = np.zeros((size, 5))
    rows_c, lo_c, hi_c, level_c = [], [], [], []
    for r in range(size):
        keep = chosen[present[r]]
        if keep.size == 0:
            continue
        sums[r] = frontier_sums(frontier(x[keep], y[keep], "geometric"))
        start = x[keep[0]]
        which = np.floor((x[keep] - start) / GEOMETRIC_WIDTH).astype(np.int64)
        count = int(np.floor((x[-1] - start) / GEOMETRIC_WIDTH)) + 1
        level = np.full(count, np.inf)
        np.minimum.at(level, which, y[keep])
        edges = start + np.arange(count + 1) * GEOMETRIC_WIDTH
        rows_c.append(np.full(count + 1, r))
        lo_c.append(np.concatenate([[0], np.searchsorted(x, edges[:-1] - EDGE_SLACK, side="left")]))
        hi_c.append(np.concatenate([[keep[0]], np.searchsorted(x, edges[1:] + EDGE_SLACK, side="right")]))
        level_c.append(np.concatenate([[np.inf], level]))
    if not rows_c:
        empty = np.zeros(0, np.intp)
        return sums, (empty, empty, empty, np.zeros(0), True)
    return sums, (np.concatenate(rows_c), np.concatenate(lo_c), np.concatenate(hi_c),
                  np.concatenate(level_c), True)  # fmt: skip


def sparse_sums(
    x: Array, y: Array, method: str, bins: int, n_boot: int, rng: np.random.Generator, cells: int
) -> Array:
    """Least-squares sums of ``n_boot`` resamples' frontiers, shape (n_boot, 5), drawn
    sparsely in batches of about ``cells`` counts."""
    n = len(x)
    chosen = candidates(x, y, method, bins)
    if len(chosen) > SPARSE_SHARE * n:  # no few runs make the frontiers: every run is drawn
        return np.concatenate([batch_sums(x, y, dense_counts(rng, n, size), method, bins)
                               for size in _batches(n_boot, cells // n)])  # fmt: skip
    ranges, out = RangeMin(y, chosen), []
    for size in _batches(n_boot, cells // len(chosen)):
        counts, hits = draw(rng, n, len(chosen), size)
        sums, ok = certified_sums(x, y, chosen, counts, method, bins, ranges)
        if not ok.all():
            redo = np.flatnonzero(~ok)
            sums[redo] = batch_sums(x, y, complete(rng, n, chosen, counts[redo], hits[redo]), method, bins)
        out.append(sums)
    return np.concatenate(out) if out else np.zeros((0, 5))


def _batches(total: int, size: int) -> list[int]:
    size = max(1, size)
    return [min(size, total - start) for start in range(0, total, size)]


def dense_counts(rng: np.random.Generator, n: int, size: int) -> NDArray[np.int64]:
    """How often each of ``size`` resamples drew each of the n runs: every draw made."""
    picks = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)
