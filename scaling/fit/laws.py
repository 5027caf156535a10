"""A law of stored runs: one metric of a family's runs (selection.py chooses them) fitted,
predicted, compared, audited, and its error surface. The fit history is history.py's, what a
report or a refit asks of a family study.py's."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from scaling.errors import ClipscaleError
from scaling.fit.audit import Audit, Choice, audit, choose, compute_cut
from scaling.fit.decide import Decision, Side, decide, scale_keys
from scaling.fit.forms import FORMS, N_PARAMS, fit_form, frontier_for
from scaling.fit.huber import DELTA, Array
from scaling.fit.powerlaw import Law, percentile_interval
from scaling.fit.selection import (
    _SIZE,
    Read,
    Run,
    Runs,
    checkpoints_of,
    compute_of,
    error_label,
    errors_of,
    family_of,
    from_error,
    load,
    lower_is_better,
    source_of,
    to_error,
)
from scaling.fit.surface import Surface, fit_surface
from scaling.store.query import parse_filters


@dataclass(frozen=True)
class Settings:
    """How a law is fitted: its form, the frontier and the bootstrap."""

    method: str | None = None  # None: the form's own (binned for power, geometric for the rest)
    bins: int = 5
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0
    form: str = "power"  # power, floor, saturating, broken, auto (by held-out error)
    delta: float = DELTA
    cut: float | None = None  # where `auto` holds runs out (None: the top quarter of log compute)
    objective: str | None = None  # ols or huber (None: ols for power, huber for the rest and auto)
    # σ of log10 error between runs that differ only in their seed: > 0 bootstraps by seed
    # noise (every run kept, N(0, σ²) added) instead of resampling runs; see powerlaw.
    noise: float = 0.0

    def __post_init__(self) -> None:
        if self.bins < 1 or self.n_boot < 0 or not 0 < self.level < 1 or not self.delta > 0:
            raise ClipscaleError("bins must be ≥ 1, boot ≥ 0, level in (0, 1) and delta > 0")
        if not 0 <= self.seed < 2**32:  # numpy's generators take no negative seed
            raise ClipscaleError(f"seed must be a whole number in [0, 2^32), got {self.seed}")
        if not 0 <= self.noise < 1:
            raise ClipscaleError(
                f"noise={self.noise:g}: the seed noise is a standard deviation of log10 error, in [0, 1)"
            )
        if self.cut is not None and not self.cut > 0:
            raise ClipscaleError(f"cut must be positive, got {self.cut:g}")

    @property
    def frontier(self) -> str:
        return frontier_for(self.form if self.form in FORMS else "auto", self.method)

    def refitting(self, form: str) -> Settings:
        """The settings that refit a law these settings gave, of ``form``: with form=auto, that
        form by the Huber loss through auto's frontier, as auto fits the form it chose."""
        if self.form != "auto":
            return self
        return replace(self, form=form, method=self.frontier, objective=self.objective or "huber")


@dataclass(frozen=True)
class Fitted:
    """A law fitted on one family's runs (narrowed by filters) for one metric."""

    family: str
    filters: tuple[str, ...]
    dataset: str
    metric: str
    settings: Settings
    law: Any  # powerlaw.Law, or curve.Curve for the other forms
    runs: Runs
    skipped: tuple[str, ...] = field(default_factory=tuple)  # runs without a value for the metric
    checkpoints: str = "final"  # which points of trajectories: final, all, only (see store.query)
    left_out: int = 0  # constant-LR checkpoints the selection left out
    choice: Any = None  # audit.Choice where the form was chosen by held-out error (form=auto)
    excluded: tuple[tuple[str, str], ...] = ()  # (run, why): compute not known, or the run diverged

    @property
    def left_out_text(self) -> str:
        """The runs left out of the law and why, for people; empty when none was."""
        if not self.excluded:
            return ""
        whys: dict[str, int] = {}
        for _, why in self.excluded:
            kind = why.split(":")[0] if why.startswith("diverged") else why
            whys[kind] = whys.get(kind, 0) + 1
        first = self.excluded[0]
        return (f"{len(self.excluded)} runs left out (" + ", ".join(f"{n} {k}" for k, n in whys.items())
                + f"; e.g. {first[0]}: {first[1]})")  # fmt: skip

    @property
    def points(self) -> str:
        """Which runs the law stands on, for people: a report says it beside the law."""
        said = {"final": "finished runs", "all": "finished runs and constant-LR checkpoints",
                "only": "constant-LR checkpoints only"}[self.checkpoints]  # fmt: skip
        if self.left_out:
            said += f" ({self.left_out} checkpoints left out: checkpoints=all takes them in)"
        return f"checkpoints={self.checkpoints}: {said}"

    @property
    def inputs(self) -> str:
        """A digest of the runs and values fitted: a refit on the same inputs is not news."""
        digest = hashlib.sha256("\0".join(self.runs.ids).encode())
        for column in (self.runs.columns["compute"], self.runs.columns["value"]):
            digest.update(np.ascontiguousarray(column).tobytes())
        return digest.hexdigest()

    @property
    def sources(self) -> list[str]:
        """The data sources of the runs fitted (see source_of)."""
        return sorted({source_of(r.data) for r in self.runs})

    def record(self) -> dict[str, Any]:
        law, on = self.law, {p.run for p in self.law.frontier}
        by_id = {r.id: r for r in self.runs if r.id in on}
        ci = law.params_ci
        power = {"alpha": law.params["alpha"], "beta": law.params["beta"], "alpha_ci": list(ci["alpha"]),
                 "beta_ci": list(ci["beta"])} if law.name == "power" else {}  # fmt: skip
        return {
            "family": self.family, "filters": list(self.filters), "dataset": self.dataset,
            "metric": self.metric, "error": error_label(self.metric), "form": law.name,
            "formula": law.formula, **power, "params": dict(law.params),
            "params_ci": {k: list(v) for k, v in law.params_ci.items()}, **_convergence(law),
            **({"choice": choice_record(self.choice)} if self.choice is not None else {}),
            "level": law.level, "r2": law.r2, "rmse_log10": law.rmse, "n_runs": law.n_runs,
            "n_frontier": len(law.frontier), "n_skipped": len(self.skipped), "frontier_method": law.method,
            "frontier_requested": self.settings.method or law.method, "bins": law.bins, "n_boot": law.n_boot,
            "boot_valid": law.boot_valid, "seed": law.seed, "noise": law.noise, "sources": self.sources,
            "checkpoints": self.checkpoints, "checkpoints_left_out": self.left_out,
            "n_excluded": len(self.excluded),
            "excluded": [{"run": run, "reason": why} for run, why in self.excluded],
            "frontier": [
                {"compute": p.compute, "error": p.error, "run": p.run, "model": by_id[p.run].model,
                 "data": by_id[p.run].data, "samples_seen": by_id[p.run].samples_seen,
                 "run_compute": p.run_compute}
                for p in law.frontier
            ],
        }  # fmt: skip


def _convergence(law: Any) -> dict[str, Any]:
    """How a Huber fit (a curve or the surface) converged and how much it moves with δ; for
    the least-squares power law, only its objective."""
    if isinstance(law, Law):
        return {"objective": "least squares of log10 E on log10 C"}
    return {
        "objective": f"summed Huber (delta={law.delta:g}) of ln residuals",
        "objective_value": law.objective,
        "converged": law.converged,
        "starts_reached_best": law.reached,
        "starts_optimised": law.tried,
        "starts_scored": law.grid,
        "delta_sensitivity": {f"{d:g}": p for d, p in law.sensitivity.items()},
    }


def choice_record(choice: Any) -> dict[str, Any]:
    return {"form": choice.form, "why": choice.reason,
            "held_out_are": {a.form: a.are for a in choice.audits},
            "failed": dict(choice.failed)}  # fmt: skip


def fit(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str, settings: Settings = Settings(),
    given: Read | None = None,
) -> Fitted:  # fmt: skip
    """Fit E = 1 - metric against compute on the frontier of the selected runs (read from
    ``given`` where a refit read them for many laws at once)."""
    parsed = parse_filters(filters)
    family = family_of(parsed)
    runs, skipped, left_out, excluded = load(engine, filters, dataset, metric, given=given)
    try:
        e = errors_of(metric, runs)
        law, choice = fit_arrays(settings, compute_of(runs), e, runs.ids, _upper(metric))
    except ClipscaleError as err:
        raise ClipscaleError(f"{_law_name(family, dataset, metric)}: {err}") from None
    return Fitted(family, tuple(filters), dataset, metric, settings, law, runs, tuple(skipped),
                  checkpoints_of(parsed), left_out, choice, tuple(excluded))  # fmt: skip


def _upper(metric: str) -> float | None:
    return None if lower_is_better(metric) else 1.0


CANDIDATE_BOOT = 200  # resamples behind each candidate's held-out intervals when choosing a form


def fit_arrays(
    settings: Settings, c: Array, e: Array, ids: Sequence[str], upper: float | None = 1.0
) -> tuple[Any, Choice | None]:
    """The law of ``settings.form`` through the runs; ``auto`` first chooses the form by
    held-out error (runs at or above ``settings.cut`` held out) and returns the choice."""
    if settings.form != "auto":
        law = fit_form(settings.form, c, e, ids, method=settings.frontier, bins=settings.bins,
                       n_boot=settings.n_boot, level=settings.level, seed=settings.seed, delta=settings.delta,
                       upper=upper, objective=settings.objective, noise=settings.noise)  # fmt: skip
        return law, None
    cut = settings.cut if settings.cut is not None else compute_cut(c)
    choice = choose_form(settings, c, e, ids, np.asarray(c >= cut, dtype=bool), f"compute ≥ {cut:.3g}", upper)
    law, _ = fit_arrays(settings.refitting(choice.form), c, e, ids, upper)
    return law, choice


def choose_form(
    settings: Settings, c: Array, e: Array, ids: Sequence[str], held: Any, split: str,
    upper: float | None = 1.0,
) -> Choice:  # fmt: skip
    """Audit every form on one split, all through the same frontier, and choose by held-out error."""
    trial = replace(
        settings,
        method=settings.frontier,
        n_boot=min(settings.n_boot, CANDIDATE_BOOT),
        cut=None,
        objective=settings.objective or "huber",
    )  # one objective for every candidate

    def candidate(form: str) -> Any:
        def fitter(cc: Array, ee: Array, rr: Sequence[str]) -> Any:
            return fit_arrays(replace(trial, form=form), cc, ee, rr, upper)[0]

        return lambda: audit(fitter, form, c, e, ids, held, split, settings.level)

    return choose([(f, N_PARAMS[f], candidate(f)) for f in FORMS])


def _law_name(family: str, dataset: str, metric: str) -> str:
    return f"family {family}, {dataset}/{metric}"


# ---------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Prediction:
    label: str
    compute: float
    model: str | None
    samples_seen: float | None
    gmacs_per_sample: float | None
    error: float
    error_ci: tuple[float, float]

    def record(self, fitted: Fitted) -> dict[str, Any]:
        lo, hi = self.error_ci
        return {
            "label": self.label, "model": self.model, "samples_seen": self.samples_seen,
            "gmacs_per_sample": self.gmacs_per_sample, "compute": self.compute,
            "dataset": fitted.dataset, "metric": fitted.metric,
            "predicted": from_error(fitted.metric, self.error),
            "predicted_ci": sorted([from_error(fitted.metric, lo), from_error(fitted.metric, hi)]),
            "error": self.error, "error_ci": [lo, hi], "level": fitted.law.level,
            "law": {"form": fitted.law.name, "formula": fitted.law.formula, "params": dict(fitted.law.params),
                    "n_runs": fitted.law.n_runs, "frontier_method": fitted.law.method},
        }  # fmt: skip


def predict(
    fitted: Fitted, compute: float, label: str = "", model: str | None = None,
    samples_seen: float | None = None, gmacs: float | None = None,
) -> Prediction:  # fmt: skip
    error, ci = fitted.law.predict(compute)
    return Prediction(label or f"C={compute:.3g}", compute, model, samples_seen, gmacs, error, ci)


# ---------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Comparison:
    a: Fitted
    b: Fitted
    alpha_diff: float
    alpha_diff_ci: tuple[float, float]
    beta_ratio: float
    beta_ratio_ci: tuple[float, float]
    p_alpha_a_lower: float  # share of resample pairs where a's α is below b's (a scales faster)
    decision: Decision | str | None = None  # which side small scale picks, or why it cannot say

    def record(self) -> dict[str, Any]:
        def side(f: Fitted) -> dict[str, Any]:
            return {k: v for k, v in f.record().items() if k != "frontier"}

        return {
            "a": side(self.a), "b": side(self.b),
            "alpha_diff": self.alpha_diff, "alpha_diff_ci": list(self.alpha_diff_ci),
            "beta_ratio": self.beta_ratio, "beta_ratio_ci": list(self.beta_ratio_ci),
            "p_alpha_a_lower": self.p_alpha_a_lower, "level": self.a.law.level,
            **({"decision": self.decision.record() if isinstance(self.decision, Decision) else
                {"reason": self.decision}} if self.decision is not None else {}),
        }  # fmt: skip


def compare(a: Fitted, b: Fitted) -> Comparison:
    """α_a − α_b and β_a / β_b with intervals from independent bootstraps of the two families."""
    if (a.dataset, a.metric) != (b.dataset, b.metric):
        raise ClipscaleError("compare laws of the same metric")
    if not (isinstance(a.law, Law) and isinstance(b.law, Law)):
        raise ClipscaleError("compare compares power laws (α, β): fit both with form=power")
    n = min(len(a.law.draws), len(b.law.draws))
    if n == 0:
        raise ClipscaleError("a law without bootstrap draws cannot be compared (boot=0)")
    rng = np.random.default_rng(a.settings.seed + 1)
    da = a.law.draws[rng.permutation(len(a.law.draws))[:n]]
    db = b.law.draws[rng.permutation(len(b.law.draws))[:n]]
    diff, log_ratio = da[:, 0] - db[:, 0], da[:, 1] - db[:, 1]
    lo, hi = percentile_interval(log_ratio, a.law.level)
    return Comparison(
        a, b, a.law.alpha - b.law.alpha, percentile_interval(diff, a.law.level), a.law.beta / b.law.beta,
        (10**lo, 10**hi), float(np.mean(diff < 0)), decision_of(a, b),
    )  # fmt: skip


def decision_of(a: Fitted, b: Fitted) -> Decision | str:
    """How well small scale picks the side that wins at the largest scale both reached (see
    decide); where the sides cannot be scored that way, why."""
    keys = scale_keys([r.model for r in (*a.runs, *b.runs)], [r.samples_seen for r in (*a.runs, *b.runs)])

    def side(f: Fitted, k: Sequence[tuple[str, int]]) -> Side:
        return Side(tuple(k), compute_of(f.runs), errors_of(f.metric, f.runs), tuple(f.runs.ids))

    def fitter(form: str) -> Any:
        quick = replace(a.settings.refitting(form), n_boot=0, cut=None)
        return lambda c, e, ids: fit_arrays(quick, c, e, ids, _upper(a.metric))[0]

    try:
        return decide(
            side(a, keys[: len(a.runs)]),
            side(b, keys[len(a.runs) :]),
            (fitter(a.law.name), fitter(b.law.name)),
            a.settings.cut,
            n_boot=min(a.settings.n_boot, CANDIDATE_BOOT),
            level=a.law.level,
            seed=a.settings.seed,
        )
    except ClipscaleError as e:
        return str(e)


# ---------------------------------------------------------------- history


# ---------------------------------------------------------------- studies (what a report shows)


# ---------------------------------------------------------------- what to run next


# ---------------------------------------------------------------- refits as points land


# ---------------------------------------------------------------- the extrapolation audit


@dataclass(frozen=True)
class Audited:
    """An audit of stored runs: the split, the law below it, each held-out run's prediction."""

    family: str
    filters: tuple[str, ...]
    dataset: str
    metric: str
    settings: Settings
    audit: Audit
    runs: Sequence[Run]  # Runs where read from the store
    cut: float | None
    choice: Choice | None  # form=auto: which form the runs below the split chose

    def record(self) -> dict[str, Any]:
        by_id, a, m = {r.id: r for r in self.runs}, self.audit, self.metric
        held = []
        for h in a.held_out:
            r = by_id[h.run]
            lo, hi = sorted([from_error(m, h.predicted_ci[0]), from_error(m, h.predicted_ci[1])])
            held.append({"run": h.run, "model": r.model, "data": r.data, "samples_seen": r.samples_seen,
                         "compute": h.compute, "actual": r.value, "predicted": from_error(m, h.predicted),
                         "predicted_ci": [lo, hi], "covered": h.covered, "are": h.are,
                         "frontier": h.frontier})  # fmt: skip
        return {
            "family": self.family, "filters": list(self.filters), "dataset": self.dataset, "metric": m,
            "error": error_label(m), "form": a.law.name, "split": a.split, "cut": self.cut,
            "n_fit": a.n_fit, "n_held_out": len(a.held_out), "n_scored": len(a.scored),
            "are": a.are, "are_all": a.are_all, "coverage": a.coverage, "level": self.settings.level,
            "law": {"formula": a.law.formula, "params": dict(a.law.params), "frontier_method": a.law.method,
                    "n_frontier": len(a.law.frontier), **_convergence(a.law)},
            **({"choice": choice_record(self.choice)} if self.choice is not None else {}),
            "held_out": held,
        }  # fmt: skip


def split_runs(runs: Sequence[Run], cut: float | None, holdout: str | None) -> tuple[Array, str]:
    """Which runs an audit holds out: at or above a compute cut, or the largest model's
    (GMACs per sample), or the largest data set's (unique samples)."""
    if (cut is None) == (holdout is None):
        raise ClipscaleError("audit: give cut=COMPUTE or holdout=model|data (one of them)")
    if cut is not None:
        if not cut > 0:
            raise ClipscaleError(f"audit: cut must be positive, got {cut:g}")
        return np.array([r.compute >= cut for r in runs]), f"compute ≥ {cut:.3g}"
    if holdout == "model":
        size = {r.model: r.gmacs_per_sample or r.params or 0.0 for r in runs}
        largest = max(size, key=lambda k: (size[k], k))
        return np.array([r.model == largest for r in runs]), f"model {largest} (the largest)"
    if holdout == "data":
        sizes = {r.data: data_size_of(r) for r in runs}
        largest = max(sizes, key=lambda k: (sizes[k], k))
        return np.array([r.data == largest for r in runs]), f"data {largest} (the largest)"
    raise ClipscaleError(f"audit: holdout={holdout!r}: use model or data")


def data_size_of(run: Run) -> float:
    """Unique samples of a run's data set: as stored, else read from a size suffix (LAION-80M)."""
    if run.data_size:
        return float(run.data_size)
    m = _SIZE.match(run.data)
    if not m:
        raise ClipscaleError(f"data set {run.data}: its size is not known (import it with data_size=)")
    from scaling.units import parse_count

    return float(parse_count(m["size"], f"size of {run.data}"))


def audit_runs(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str, settings: Settings = Settings(),
    cut: float | None = None, holdout: str | None = None,
) -> Audited:  # fmt: skip
    """Fit ``settings.form`` on the runs the split keeps and predict every run it holds out;
    ``auto`` chooses the form on the kept runs alone (their own top quarter held out)."""
    family = family_of(parse_filters(filters))
    runs, *_ = load(engine, filters, dataset, metric)
    return audit_of(family, filters, dataset, metric, runs, settings, cut, holdout)


def audit_of(
    family: str, filters: Sequence[str], dataset: str, metric: str, runs: Sequence[Run],
    settings: Settings = Settings(), cut: float | None = None, holdout: str | None = None,
) -> Audited:  # fmt: skip
    """The audit of runs already selected (see audit_runs)."""
    c, e = compute_of(runs), errors_of(metric, runs)
    held, split = split_runs(runs, cut, holdout)
    chosen: list[Choice] = []

    def fitter(cc: Array, ee: Array, rr: Sequence[str]) -> Any:
        law, choice = fit_arrays(replace(settings, cut=None), cc, ee, rr, _upper(metric))
        if choice is not None:
            chosen.append(choice)
        return law

    try:
        result = audit(fitter, settings.form, c, e, [r.id for r in runs], held, split, settings.level)
    except ClipscaleError as err:
        raise ClipscaleError(f"{_law_name(family, dataset, metric)}: {err}") from None
    return Audited(family, tuple(filters), dataset, metric, settings, result, runs, cut,
                   chosen[0] if chosen else None)  # fmt: skip


# ---------------------------------------------------------------- the error surface


@dataclass(frozen=True)
class FittedSurface:
    family: str
    filters: tuple[str, ...]
    dataset: str
    metric: str
    surface: Surface
    runs: Runs
    catalogue: dict[str, float]  # model → N, for the best catalogue model per budget

    def record(self, budgets: Sequence[float] = ()) -> dict[str, Any]:
        s = self.surface
        out: dict[str, Any] = {
            "family": self.family, "filters": list(self.filters), "dataset": self.dataset,
            "metric": self.metric, "error": error_label(self.metric), "form": s.name, "size": s.size,
            "formula": s.formula, "params": dict(s.params),
            "params_ci": {k: list(v) for k, v in s.params_ci.items()}, "level": s.level,
            "n_runs": s.n_runs, "rmse_ln": s.rmse, "n_boot": s.n_boot, "boot_valid": s.boot_valid,
            **_convergence(s),
        }  # fmt: skip
        if budgets and s.size == "gmacs":
            n, d = s.optimal(np.asarray(budgets, float))
            out["compute_optimal"] = [
                {"compute": float(c), "gmacs_per_sample": float(nn), "samples_seen": float(dd),
                 "best_model": dict(zip(("model", "samples_seen", "error"),
                                        s.best_of(self.catalogue, float(c)), strict=True))}
                for c, nn, dd in zip(budgets, n, d, strict=True)
            ]  # fmt: skip
        return out


def fit_surface_runs(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str, settings: Settings = Settings(),
    size: str = "gmacs", effective: bool = False, top: int | None = -1,
) -> FittedSurface:  # fmt: skip
    """E(N, D) over every selected run: N its GMACs per sample (or parameters), D its samples
    seen; ``effective``: repeats of the data set count less."""
    if size not in ("gmacs", "params"):
        raise ClipscaleError(f"size={size!r}: use gmacs or params")
    if settings.noise:
        raise ClipscaleError("noise= is for the laws of one variable; the surface resamples runs")
    parsed = parse_filters(filters)
    family = family_of(parsed)
    runs, *_ = load(engine, filters, dataset, metric, need_compute=False)
    n = [(r.gmacs_per_sample if size == "gmacs" else r.params) for r in runs]
    missing = [r.id for r, v in zip(runs, n, strict=True) if not v]
    if missing:
        what = "GMACs per sample" if size == "gmacs" else "parameters"
        raise ClipscaleError(f"run {missing[0]}: its {what} are not known (size=gmacs|params)")
    e = [to_error(metric, r.value) for r in runs]
    unique = [data_size_of(r) for r in runs] if effective else None
    try:
        sizes = [float(v or 0.0) for v in n]
        s = fit_surface(sizes, [r.samples_seen for r in runs], e, unique, size=size, n_boot=settings.n_boot,
                        level=settings.level, seed=settings.seed, delta=settings.delta, top=top)  # fmt: skip
    except ClipscaleError as err:
        raise ClipscaleError(f"{_law_name(family, dataset, metric)}: {err}") from None
    catalogue = {r.model: float(v) for r, v in zip(runs, n, strict=True) if v}
    return FittedSurface(family, tuple(filters), dataset, metric, s, runs, catalogue)
