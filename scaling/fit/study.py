"""Studies, what `scaling report` and `scaling status` ask of a family: a law per group and
metric with predictions, comparisons, audits and surfaces; refits as points land; what to
run next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.engine import Engine

from scaling.errors import ClipscaleError
from scaling.fit.audit import compute_cut
from scaling.fit.history import record_fits
from scaling.fit.huber import Array
from scaling.fit.laws import (
    Audited,
    Comparison,
    Fitted,
    Prediction,
    Settings,
    _law_name,
    _upper,
    audit_of,
    compare,
    fit,
    fit_arrays,
    predict,
)
from scaling.fit.powerlaw import Law
from scaling.fit.selection import (
    Read,
    _in_group,
    compute_of,
    errors_of,
    family_of,
    groups_of,
    holds,
    metrics_of,
    model_gmacs,
    read_groups,
)
from scaling.fit.suggest import Candidate, Suggestion, suggest
from scaling.fit.surface import Surface, fit_surface
from scaling.store.query import fetch, parse_filters
from scaling.units import format_count


@dataclass(frozen=True)
class Target:
    """A prediction asked for: a model at a number of samples seen, or a compute."""

    label: str
    model: str | None = None
    samples_seen: float | None = None
    compute: float | None = None
    gmacs: float | None = None

    @classmethod
    def of_model(cls, model: str, samples_seen: int, gmacs: float | None = None) -> Target:
        return cls(
            f"{model} {format_count(samples_seen)}", model=model, samples_seen=samples_seen, gmacs=gmacs
        )

    @classmethod
    def of_compute(cls, compute: float) -> Target:
        return cls(f"C={compute:.3g}", compute=compute)


@dataclass(frozen=True)
class Section:
    """One metric of a study: a law per group of runs, predictions, and group comparisons."""

    dataset: str
    metric: str
    fits: tuple[tuple[str, Fitted], ...]
    predictions: tuple[tuple[str, Prediction], ...]
    comparisons: tuple[Comparison, ...]
    audits: tuple[tuple[str, Audited | str], ...] = ()  # per group: its audit, or why there is none
    surfaces: tuple[tuple[str, Surface | str], ...] = ()  # per group: E(N, D), or why there is none


def resolve(engine: Engine, fitted: Fitted, target: Target) -> Prediction:
    """A prediction for a target: a compute, or a model (GMACs from model_gmacs unless
    given) at a number of samples seen."""
    if target.compute is not None:
        return predict(fitted, target.compute, target.label)
    if target.model is None or target.samples_seen is None:
        raise ClipscaleError(f"prediction {target.label}: give compute=, or model= and samples_seen=")
    gmacs = target.gmacs or model_gmacs(engine, fitted.family, target.model)
    return predict(
        fitted, gmacs * target.samples_seen, target.label, target.model, target.samples_seen, gmacs
    )


def study(
    engine: Engine, filters: Sequence[str], metrics: Sequence[tuple[str, str]] = (),
    groups: dict[str, list[str]] | None = None, targets: Sequence[Target] = (),
    settings: Settings = Settings(),
) -> tuple[Section, ...]:  # fmt: skip
    """Every law a report shows, all fitted before anything is written: one bad fit fails it."""
    metrics = list(metrics) or metrics_of(engine, filters)
    if not metrics:
        raise ClipscaleError(f"no succeeded run matches {' '.join(filters)}: nothing to fit")
    groups = groups if groups is not None else groups_of(engine, filters)
    sections = []
    for dataset, metric in metrics:
        fits = tuple(
            (name, fit(engine, _in_group(filters, group), dataset, metric, settings))
            for name, group in groups.items()
        )
        preds = tuple((name, resolve(engine, f, t)) for name, f in fits for t in _targets(f, targets))
        comps = tuple(compare(a, b) for i, (_, a) in enumerate(fits) for _, b in fits[i + 1 :]
                      if isinstance(a.law, Law) and isinstance(b.law, Law))  # fmt: skip
        audits = tuple(
            (name, _audit_or_reason(_in_group(filters, group), dataset, metric, settings, f))
            for (name, group), (_, f) in zip(groups.items(), fits, strict=True)
        )
        surfaces = tuple((name, surface_of(f)) for name, f in fits)
        sections.append(Section(dataset, metric, fits, preds, comps, audits, surfaces))
    return tuple(sections)


def _audit_or_reason(
    filters: Sequence[str], dataset: str, metric: str, settings: Settings, fitted: Fitted
) -> Audited | str:
    """Every law in a report comes with its audit: held out at ``cut`` (the top quarter of
    the group's log compute by default); a group too small to audit says why."""
    cut = settings.cut if settings.cut is not None else compute_cut(compute_of(fitted.runs))
    try:
        return audit_of(
            fitted.family, filters, dataset, metric, fitted.runs, replace(settings, cut=None), cut
        )
    except ClipscaleError as e:
        return str(e).removeprefix(f"{_law_name(fitted.family, dataset, metric)}: ")


def surface_of(fitted: Fitted) -> Surface | str:
    """The error surface E(N, D) of a law's runs (N in GMACs per sample), for its
    compute-optimal line; without bootstrap (the line is drawn, not given an interval)."""
    runs = fitted.runs
    if any(not r.gmacs_per_sample for r in runs):
        return "a run's GMACs per sample are not known"
    try:
        return fit_surface([float(r.gmacs_per_sample or 0.0) for r in runs], [r.samples_seen for r in runs],
                           errors_of(fitted.metric, runs), n_boot=0, seed=fitted.settings.seed,
                           delta=fitted.settings.delta)  # fmt: skip
    except ClipscaleError as e:
        return str(e)


def _targets(fitted: Fitted, targets: Sequence[Target]) -> Sequence[Target]:
    # Without targets, mark where the law says the next tenfold of compute lands.
    if targets:
        return targets
    top = max(r.compute for r in fitted.runs)
    return [Target("10× largest run", compute=top * 10)]


def suggest_next(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str, settings: Settings,
    candidates: Sequence[Candidate], target: Target, budget: float,
) -> Suggestion:  # fmt: skip
    """The planned points not run yet (nor running), ranked by how much each narrows the
    interval at ``target`` per GPU-hour; the best that fit in ``budget`` GPU-hours chosen."""
    fitted = fit(engine, filters, dataset, metric, settings)
    rows, _ = fetch(engine, parse_filters([f"family={fitted.family}"]), metrics=False)
    taken = {r["id"] for r in rows if r["status"] != "failed"}
    left = [c for c in candidates if c.id not in taken]
    at = resolve(engine, fitted, target)
    same = settings.refitting(fitted.law.name)  # the law whose interval is narrowed, refitted alike

    def refit(c: Array, e: Array, ids: Sequence[str]) -> Any:
        return fit_arrays(same, c, e, ids, _upper(metric))[0]

    c = compute_of(fitted.runs)
    return suggest(fitted.law, c, errors_of(metric, fitted.runs), fitted.runs.ids, left,
                   at.label, at.compute, budget, refit)  # fmt: skip


@dataclass(frozen=True)
class Refit:
    group: str
    dataset: str
    metric: str
    fitted: Fitted | None
    reason: str = ""  # why there is no law yet
    recorded: bool = False


def refit(
    engine: Engine, family: str, trigger: str = "ingest", settings: Settings = Settings(),
    landed: Sequence[str] | None = None,
) -> list[Refit]:  # fmt: skip
    """Refit every default law of a family (per data source and headline metric) and add
    the new ones to the fit history; a law that cannot be fitted yet says why. With
    ``landed`` (the points a status poll stored), only the laws of the groups holding one:
    the others stand on the runs they stood on."""
    filters = [f"family={family}"]
    out = []
    groups = groups_of(engine, filters)
    if landed is not None:
        groups = {name: g for name, g in groups.items() if holds(engine, _in_group(filters, g), landed)}
        if not groups:
            return []
    pairs = metrics_of(engine, [*filters, "status=succeeded"])
    reads = read_groups(engine, filters, groups, pairs)
    for dataset, metric in pairs:
        out += fit_each(engine, filters, dataset, metric, settings, groups, reads)
    # Every law fitted before any is recorded, all in one transaction.
    recorded = iter(record_fits(engine, [r.fitted for r in out if r.fitted is not None], trigger))
    return [replace(r, recorded=next(recorded)) if r.fitted is not None else r for r in out]


def fit_each(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str, settings: Settings,
    groups: dict[str, list[str]] | None = None, reads: dict[str, Read] | None = None,
) -> list[Refit]:  # fmt: skip
    """One law per group of runs (default: per data source); a group that cannot be fitted
    (too few runs, none of known compute) says why instead. ``reads``: each group's runs, read
    once for many metrics."""
    family = family_of(parse_filters(filters))
    out = []
    for group, selection in (groups if groups is not None else groups_of(engine, filters)).items():
        try:
            given = reads.get(group) if reads else None
            f = fit(engine, _in_group(filters, selection), dataset, metric, settings, given)
        except ClipscaleError as e:
            reason = str(e).removeprefix(f"{_law_name(family, dataset, metric)}: ")
            out.append(Refit(group, dataset, metric, None, reason))
            continue
        out.append(Refit(group, dataset, metric, f))
    return out
