"""The sparse bootstrap (scaling/fit/resample.py): a resample it certifies has the frontier
the dense draws give it, exactly; a resample it cannot certify is completed and computed
whole; the laws' intervals come out as the dense bootstrap's."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.fit import fit_law, resample
from scaling.fit.frontier import _cross, batch_sums, frontier, sort_runs

SPARSE = ("binned", "pareto", "geometric", "hull")


def runs(rng: np.random.Generator, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, centred log10 compute and log10 error of four kinds of family: a law with
    runs above it; a grid (few computes, many runs at each, errors rounded so many tie);
    coarse integers (ties of compute and of error everywhere); five models' runs."""
    if kind == "law":
        c = rng.uniform(9, 14, n)
        e = np.log10(np.minimum(6 * (10**c) ** -0.11 * 10 ** np.abs(rng.normal(0, 0.05, n)), 1))
    elif kind == "grid":
        c = rng.integers(0, 12, n) * 0.3 + 9
        e = -0.1 * c + np.abs(rng.normal(0, 0.05, n)).round(2)
    elif kind == "models":  # five models × samples seen log-uniform: sparse tails move the bin edges
        gmacs = np.array([4.4, 17.6, 81.1, 167.4, 290.7])[rng.integers(0, 5, n)]
        c = np.log10(gmacs * 10 ** rng.uniform(8, 10.5, n))
        e = np.log10(4 * (10**c) ** -0.1 * 10 ** np.abs(rng.normal(0, 0.05, n)))
    else:
        c, e = rng.integers(0, 40, n) / 10, rng.integers(0, 30, n) / 10
    order = sort_runs(c, e)
    return c[order] - c[order].mean(), e[order]


@pytest.mark.parametrize("kind", ["law", "grid", "ties", "models"])
@pytest.mark.parametrize("method", SPARSE)
def test_certified_resamples_have_the_dense_frontier(kind: str, method: str) -> None:
    rng = np.random.default_rng(7)
    x, y = runs(rng, 20_000 if kind == "models" else 3000, kind)
    chosen = resample.candidates(x, y, method, 5)
    assert 0 < len(chosen) < len(x)
    full = resample.dense_counts(rng, len(x), 200)
    full[:40] *= rng.random((40, len(x))) < 0.02  # resamples that miss nearly every run
    full[:40, -1] += 1  # (never none at all)
    sums, ok = resample.certified_sums(x, y, chosen, full[:, chosen], method, 5, resample.RangeMin(y, chosen))
    dense = batch_sums(x, y, full, method, 5)
    np.testing.assert_allclose(sums[ok], dense[ok], rtol=1e-9, atol=1e-9)
    assert ok[40:].mean() > 0.99  # real resamples: nearly all certified
    assert not ok[:40].all()  # the check can refuse: a thinned resample's frontier leaves S


def test_draws_split_as_a_multinomial() -> None:
    """The candidates' counts of n draws: each run's count has mean 1 and variance 1 − 1/n."""
    rng = np.random.default_rng(3)
    counts, hits = resample.draw(rng, 500, 50, 40_000)
    assert (counts.sum(axis=1) == hits).all()
    assert abs(counts.mean() - 1) < 0.01
    assert abs(counts.var() - (1 - 1 / 500)) < 0.02
    assert abs(hits.mean() - 50) < 0.1


def test_completed_resamples_are_whole() -> None:
    rng = np.random.default_rng(5)
    n, chosen = 1000, np.arange(0, 1000, 10)
    counts, hits = resample.draw(rng, n, len(chosen), 20)
    full = resample.complete(rng, n, chosen, counts, hits)
    assert (full.sum(axis=1) == n).all()
    assert (full[:, chosen] == counts).all()


def law_runs(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    c = 10 ** rng.uniform(9, 14, n)
    return c, np.minimum(6 * c**-0.11 * 10 ** np.abs(rng.normal(0, 0.05, n)), 1.0)


@pytest.mark.parametrize("method", ["binned", "geometric"])
def test_sparse_intervals_match_the_dense_bootstrap(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same law, intervals within Monte Carlo error of the dense bootstrap's (other draws)."""
    c, e = law_runs(20_000)
    sparse = fit_law(c, e, method=method, n_boot=400)
    monkeypatch.setattr(resample, "SPARSE_MIN", 10**9)
    dense = fit_law(c, e, method=method, n_boot=400)
    assert sparse.alpha == dense.alpha and sparse.beta == dense.beta
    width = dense.alpha_ci[1] - dense.alpha_ci[0]
    assert width > 0
    for a, b in zip(sparse.alpha_ci, dense.alpha_ci, strict=True):
        assert abs(a - b) < 0.25 * width
    assert sparse.boot_valid == dense.boot_valid == 400


def test_uncertified_resamples_are_completed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one candidate per slice most resamples fail the check and are drawn whole: the
    interval is still the dense bootstrap's."""
    c, e = law_runs(8_000)
    completed = []
    real = resample.complete
    monkeypatch.setattr(resample, "complete", lambda *a: completed.append(len(a[3])) or real(*a))
    monkeypatch.setattr(resample, "DEPTH", 1)
    thin = fit_law(c, e, n_boot=300)
    assert sum(completed) > 30
    monkeypatch.setattr(resample, "SPARSE_MIN", 10**9)
    dense = fit_law(c, e, n_boot=300)
    width = dense.alpha_ci[1] - dense.alpha_ci[0]
    for a, b in zip(thin.alpha_ci, dense.alpha_ci, strict=True):
        assert abs(a - b) < 0.25 * width


def plain_hull(log_c: np.ndarray, log_e: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain through every run, up to the lowest error."""
    lower: list[int] = []
    for i in range(len(log_c)):
        if lower and log_c[lower[-1]] == log_c[i]:
            continue
        while len(lower) >= 2 and _cross(log_c, log_e, lower[-2], lower[-1], i) <= 0:
            lower.pop()
        lower.append(i)
    idx = np.array(lower)
    return idx[: int(np.argmin(log_e[idx])) + 1]


def test_hull_through_the_pareto_runs_is_the_hull() -> None:
    rng = np.random.default_rng(1)
    for trial in range(600):
        n = int(rng.integers(2, 60))
        if trial % 2:  # integer grids: ties and collinear runs
            c, e = rng.integers(0, 8, n).astype(float), rng.integers(0, 8, n).astype(float)
        else:
            c = rng.uniform(0, 5, n)
            e = -0.1 * c + rng.normal(0, 0.1, n)
        order = sort_runs(c, e)
        c, e = c[order], e[order]
        np.testing.assert_array_equal(frontier(c, e, "hull").runs, plain_hull(c, e))
