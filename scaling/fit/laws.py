"""Laws of stored runs: select a family's runs and one metric, fit, predict, compare, and
keep the fit history. The library behind `scaling fit`, `predict`, `compare` and `report`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scaling.errors import ClipscaleError
from scaling.fit.powerlaw import Law, fit_law, percentile_interval
from scaling.outcome import json_safe
from scaling.store.db import transaction
from scaling.store.models import Fit
from scaling.store.query import Condition, Filters, fetch, parse_filters
from scaling.units import format_count

# What a family is fitted on when no metric is named: the paper's headline evaluations
# if the family has them, else the primary metric of every evaluation set.
HEADLINE = (
    ("imagenet1k", "acc1"),
    ("imagenet_robustness", "acc1"),
    ("imagenet1k", "lp_acc1"),
    ("mscoco_captions", "image_retrieval_recall@5"),
    ("flickr30k", "image_retrieval_recall@5"),
)
PRIMARY = ("acc1", "lp_acc1", "image_retrieval_recall@5")


@dataclass(frozen=True)
class Settings:
    """How a law is fitted: the frontier and the bootstrap."""

    method: str = "binned"
    bins: int = 5
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Run:
    id: str
    model: str
    data: str
    samples_seen: int
    gmacs_per_sample: float | None
    compute: float
    value: float  # the metric; the error is 1 - value


@dataclass(frozen=True)
class Fitted:
    """A law fitted on one family's runs (narrowed by filters) for one metric."""

    family: str
    filters: tuple[str, ...]
    dataset: str
    metric: str
    settings: Settings
    law: Law
    runs: tuple[Run, ...]
    skipped: tuple[str, ...] = field(default_factory=tuple)  # runs without a value for the metric
    checkpoints: str = "final"  # which points of trajectories: final, all, only (see store.query)
    left_out: int = 0  # constant-LR checkpoints the selection left out

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
        text = json.dumps([(r.id, r.compute, r.value) for r in self.runs], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def sources(self) -> list[str]:
        """The data sources of the runs fitted (see source_of)."""
        return sorted({source_of(r.data) for r in self.runs})

    def record(self) -> dict[str, Any]:
        law, by_id = self.law, {r.id: r for r in self.runs}
        return {
            "family": self.family, "filters": list(self.filters), "dataset": self.dataset,
            "metric": self.metric, "error": f"1 - {self.metric}", "formula": law.formula,
            "alpha": law.alpha, "beta": law.beta, "alpha_ci": list(law.alpha_ci),
            "beta_ci": list(law.beta_ci),
            "level": law.level, "r2": law.r2, "rmse_log10": law.rmse, "n_runs": law.n_runs,
            "n_frontier": len(law.frontier), "n_skipped": len(self.skipped), "frontier_method": law.method,
            "frontier_requested": self.settings.method, "bins": law.bins, "n_boot": law.n_boot,
            "boot_valid": law.boot_valid, "seed": law.seed, "sources": self.sources,
            "checkpoints": self.checkpoints, "checkpoints_left_out": self.left_out,
            "frontier": [
                {"compute": p.compute, "error": p.error, "run": p.run, "model": by_id[p.run].model,
                 "data": by_id[p.run].data, "samples_seen": by_id[p.run].samples_seen,
                 "run_compute": p.run_compute}
                for p in law.frontier
            ],
        }  # fmt: skip


def split_metric(dataset: str | None, metric: str | None) -> tuple[str | None, str | None]:
    """``dataset=imagenet1k metric=acc1`` or ``metric=imagenet1k/acc1``."""
    if metric and "/" in metric and not dataset:
        dataset, metric = metric.split("/", 1)
    return dataset, metric


def family_of(filters: Filters) -> str:
    """The one family (or sweep) the filters name: laws are fitted per family."""
    names = [v for c in filters.conditions if c.key in ("family", "sweep") for v in c.values]
    if len(names) != 1:
        raise ClipscaleError("name one family to fit: family=NAME (a sweep or an imported table)")
    return names[0]


def checkpoints_of(filters: Filters) -> str:
    """Which points of trajectories the filters take: final runs unless they say otherwise
    (a constant-LR checkpoint has not cooled down: it lies above the finished runs' law)."""
    said = [c.values[0] for c in filters.conditions if c.key == "checkpoints"]
    if any(c.key == "from_checkpoint" for c in filters.conditions):
        return "all"  # the caller chose by from_checkpoint itself
    return said[-1] if said else "final"


def load(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str
) -> tuple[list[Run], list[str], int]:
    """The family's succeeded runs with a value for dataset/metric, those without one, and
    how many constant-LR checkpoints the selection left out."""
    parsed = parse_filters(filters)
    family = family_of(parsed)
    chosen = checkpoints_of(parsed)
    rest = tuple(c for c in parsed.conditions if c.key != "checkpoints")
    rows, metrics = fetch(engine, Filters((*rest, Condition("status", "=", ("succeeded",)))))
    left_out = sum(1 for r in rows if r["from_checkpoint"]) if chosen == "final" else 0
    if chosen != "all":
        rows = [r for r in rows if bool(r["from_checkpoint"]) == (chosen == "only")]
    if not rows:
        raise ClipscaleError(f"no succeeded run of family {family} matches {' '.join(filters)}")
    values = {pid: v for pid, d, m, v in metrics if d == dataset and m == metric}
    if not any(values.get(r["id"]) is not None for r in rows):
        have = sorted({f"{d}/{m}" for _, d, m, _ in metrics if m in PRIMARY})
        raise ClipscaleError(
            f"no run of family {family} has {dataset}/{metric}"
            + (f" (it has: {', '.join(have[:12])}{', …' if len(have) > 12 else ''})" if have else "")
        )
    runs, skipped = [], []
    for r in rows:
        value = values.get(r["id"])
        if value is None:
            skipped.append(r["id"])
            continue
        if r["compute_gmacs"] is None:
            raise ClipscaleError(f"run {r['id']}: its compute is not known (no GMACs per sample)")
        runs.append(Run(r["id"], r["model"], r["data"], int(r["samples_seen"]), r["gmacs_per_sample"],
                        float(r["compute_gmacs"]), float(value)))  # fmt: skip
    return runs, skipped, left_out


def fit(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str, settings: Settings = Settings()
) -> Fitted:
    """Fit E = 1 - metric against compute on the frontier of the selected runs."""
    parsed = parse_filters(filters)
    family = family_of(parsed)
    runs, skipped, left_out = load(engine, filters, dataset, metric)
    try:
        law = fit_law(
            [r.compute for r in runs], [1 - r.value for r in runs], [r.id for r in runs],
            method=settings.method, bins=settings.bins, n_boot=settings.n_boot, level=settings.level,
            seed=settings.seed,
        )  # fmt: skip
    except ClipscaleError as e:
        raise ClipscaleError(f"{_law_name(family, dataset, metric)}: {e}") from None
    return Fitted(family, tuple(filters), dataset, metric, settings, law, tuple(runs), tuple(skipped),
                  checkpoints_of(parsed), left_out)  # fmt: skip


def _law_name(family: str, dataset: str, metric: str) -> str:
    return f"family {family}, {dataset}/{metric}"


def _in_data(filters: Sequence[str], data: Sequence[str]) -> list[str]:
    """The filters narrowed to a group's data sets."""
    return [*filters, f"data=[{','.join(data)}]"]


def metrics_of(engine: Engine, filters: Sequence[str], include_all: bool = False) -> list[tuple[str, str]]:
    """The (dataset, metric) pairs a family is fitted on by default."""
    _, metrics = fetch(engine, parse_filters(filters))
    have = {(d, m) for _, d, m, v in metrics if v is not None and m in PRIMARY}
    headline = [p for p in HEADLINE if p in have]
    return headline if headline and not include_all else sorted(have)


_SIZE = re.compile(r"^(?P<source>.+?)[-_]?\d+(\.\d+)?[kKmMbBtT]$")


def source_of(data: str) -> str:
    """The data source of a data set: names that differ only in a size suffix
    (LAION-80M, LAION-400M, LAION-2B; toy-4k, toy-64k) are one source."""
    m = _SIZE.match(data)
    return m["source"] if m else data


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
            "predicted": 1 - self.error, "predicted_ci": [1 - hi, 1 - lo],
            "error": self.error, "error_ci": [lo, hi], "level": fitted.law.level,
            "law": {"formula": fitted.law.formula, "alpha": fitted.law.alpha, "beta": fitted.law.beta,
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

    def record(self) -> dict[str, Any]:
        def side(f: Fitted) -> dict[str, Any]:
            return {k: v for k, v in f.record().items() if k != "frontier"}

        return {
            "a": side(self.a), "b": side(self.b),
            "alpha_diff": self.alpha_diff, "alpha_diff_ci": list(self.alpha_diff_ci),
            "beta_ratio": self.beta_ratio, "beta_ratio_ci": list(self.beta_ratio_ci),
            "p_alpha_a_lower": self.p_alpha_a_lower, "level": self.a.law.level,
        }  # fmt: skip


def compare(a: Fitted, b: Fitted) -> Comparison:
    """α_a − α_b and β_a / β_b with intervals from independent bootstraps of the two families."""
    if (a.dataset, a.metric) != (b.dataset, b.metric):
        raise ClipscaleError("compare laws of the same metric")
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
        (10**lo, 10**hi), float(np.mean(diff < 0)),
    )  # fmt: skip


# ---------------------------------------------------------------- history


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _selection(f: Fitted) -> str:
    return json.dumps(sorted(f.filters))


def record_fit(engine: Engine, fitted: Fitted, trigger: str = "fit") -> bool:
    """Add the fit to the history unless the last fit of the same selection had the same
    inputs and settings; returns whether a row was added."""
    law = fitted.law
    row = {
        "family": fitted.family, "selection": _selection(fitted), "dataset": fitted.dataset,
        "metric": fitted.metric, "method": law.method, "bins": law.bins, "n_runs": law.n_runs,
        "n_frontier": len(law.frontier), "alpha": law.alpha, "alpha_low": json_safe(law.alpha_ci[0]),
        "alpha_high": json_safe(law.alpha_ci[1]), "beta": law.beta, "beta_low": json_safe(law.beta_ci[0]),
        "beta_high": json_safe(law.beta_ci[1]), "level": law.level, "r2": law.r2, "n_boot": law.n_boot,
        "inputs": fitted.inputs, "trigger": trigger,
    }  # fmt: skip
    same = (Fit.family == row["family"], Fit.selection == row["selection"], Fit.dataset == row["dataset"],
            Fit.metric == row["metric"])  # fmt: skip

    def work(conn: sa.Connection) -> bool:
        last = conn.execute(
            sa.select(Fit.inputs, Fit.method, Fit.bins, Fit.n_boot, Fit.level)
            .where(*same).order_by(Fit.fitted_at.desc(), Fit.id.desc()).limit(1)
        ).first()  # fmt: skip
        if last is not None and tuple(last) == (row["inputs"], row["method"], row["bins"], row["n_boot"],
                                                row["level"]):  # fmt: skip
            return False
        conn.execute(sa.insert(Fit).values(**row, fitted_at=_now()))
        return True

    return transaction(engine, work)


def history(
    engine: Engine, family: str, dataset: str | None = None, metric: str | None = None
) -> list[dict[str, Any]]:
    """Every recorded fit of the family (oldest first), optionally of one metric."""
    where = [Fit.family == family]
    if dataset:
        where.append(Fit.dataset == dataset)
    if metric:
        where.append(Fit.metric == metric)
    q = sa.select(*Fit.__table__.columns).where(*where).order_by(Fit.fitted_at, Fit.id)
    return transaction(engine, lambda conn: [dict(r._mapping) for r in conn.execute(q)])


# ---------------------------------------------------------------- studies (what a report shows)


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


def groups_of(engine: Engine, filters: Sequence[str]) -> dict[str, list[str]]:
    """The family's runs grouped by data source ({"LAION": [LAION-2B, LAION-400M, LAION-80M]})."""
    rows, _ = fetch(engine, parse_filters(filters))
    groups: dict[str, set[str]] = {}
    for r in rows:
        groups.setdefault(source_of(r["data"]), set()).add(r["data"])
    return {k: sorted(v) for k, v in sorted(groups.items())}


def model_gmacs(engine: Engine, family: str, model: str) -> float:
    """GMACs per sample of ``model``: as the family's runs record it (their median), else
    counted like `scaling plan` counts it (cached; torch is imported only to count)."""
    rows, _ = fetch(engine, parse_filters([f"family={family}", f"model={model}"]))
    found = [r["gmacs_per_sample"] for r in rows if r["gmacs_per_sample"]]
    if found:
        return float(np.median(found))
    from scaling.compute import macs_for, macs_key
    from scaling.config import Catalog, config_dirs

    spec = Catalog(config_dirs()).model(model)
    return macs_for([(spec, None, None, None)])[macs_key(spec, None, None, None)].total


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
            (name, fit(engine, _in_data(filters, data), dataset, metric, settings))
            for name, data in groups.items()
        )
        preds = tuple((name, resolve(engine, f, t)) for name, f in fits for t in _targets(f, targets))
        comps = tuple(compare(a, b) for i, (_, a) in enumerate(fits) for _, b in fits[i + 1 :])
        sections.append(Section(dataset, metric, fits, preds, comps))
    return tuple(sections)


def _targets(fitted: Fitted, targets: Sequence[Target]) -> Sequence[Target]:
    # Without targets, mark where the law says the next tenfold of compute lands.
    if targets:
        return targets
    top = max(r.compute for r in fitted.runs)
    return [Target("10× largest run", compute=top * 10)]


# ---------------------------------------------------------------- refits as points land


@dataclass(frozen=True)
class Refit:
    group: str
    dataset: str
    metric: str
    fitted: Fitted | None
    reason: str = ""  # why there is no law yet
    recorded: bool = False


def refit(
    engine: Engine, family: str, trigger: str = "ingest", settings: Settings = Settings()
) -> list[Refit]:
    """Refit every default law of a family (per data source and headline metric) and add
    the new ones to the fit history; a law that cannot be fitted yet says why."""
    filters = [f"family={family}"]
    out = []
    groups = groups_of(engine, filters)
    for dataset, metric in metrics_of(engine, [*filters, "status=succeeded"]):
        for group, data in groups.items():
            try:
                f = fit(engine, _in_data(filters, data), dataset, metric, settings)
            except ClipscaleError as e:
                reason = str(e).removeprefix(f"{_law_name(family, dataset, metric)}: ")
                out.append(Refit(group, dataset, metric, None, reason))
                continue
            out.append(Refit(group, dataset, metric, f, recorded=record_fit(engine, f, trigger)))
    return out
