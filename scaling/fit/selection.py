"""Which runs a law stands on: a family's runs selected by filters, one metric as an error,
the default metrics, and the groups (data source, data set, model type) laws are fitted per."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy.engine import Engine

from scaling.errors import ClipscaleError
from scaling.fit.huber import Array
from scaling.modeltypes import MODEL_TYPES
from scaling.store.query import (
    Condition,
    Filters,
    among,
    distinct,
    fetch,
    metric_names,
    metric_values,
    parse_filters,
)

# What a family is fitted on when no metric is named: the paper's headline evaluations
# if the family has them, else the primary metric of every evaluation set.
HEADLINE = (
    ("imagenet1k", "acc1"),
    ("imagenet_robustness", "acc1"),
    ("imagenet1k", "lp_acc1"),
    ("mscoco_captions", "image_retrieval_recall@5"),
    ("flickr30k", "image_retrieval_recall@5"),
)


PRIMARY = ("acc1", "lp_acc1", "probe_acc1", "finetune_acc1", "image_retrieval_recall@5")


_SHOTS = re.compile(r"^probe_acc1_\d+shot$")  # a k-shot probe's mean top-1 (scaling/probe.py)


def is_primary(metric: str) -> bool:
    """A metric a family is fitted on by default: each set's main one, and each k-shot probe."""
    return metric in PRIMARY or bool(_SHOTS.match(metric))


def lower_is_better(metric: str) -> bool:
    """A loss is fitted as it is; an accuracy or a recall as its error 1 − value."""
    return metric == "loss" or metric.endswith("_loss")


def to_error(metric: str, value: float) -> float:
    return value if lower_is_better(metric) else 1.0 - value


def from_error(metric: str, error: float) -> float:
    return error if lower_is_better(metric) else 1.0 - error


def errors_of(metric: str, runs: Sequence[Run]) -> Array:
    """E of each run: the law's quantity."""
    values = np.fromiter((r.value for r in runs), dtype=np.float64, count=len(runs))
    return values if lower_is_better(metric) else 1.0 - values


def error_label(metric: str) -> str:
    return metric if lower_is_better(metric) else f"1 - {metric}"


class Run(NamedTuple):
    """One run a law stands on (a tuple: a refit of 100,000 runs builds a million of them)."""

    id: str
    model: str
    data: str
    samples_seen: int
    gmacs_per_sample: float | None
    compute: float
    value: float  # the metric; the error is 1 - value (or the value, for a loss)
    params: float | None = None
    data_size: int | None = None


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


@dataclass(frozen=True)
class Read:
    """A selection's succeeded point rows, the values of the metrics asked (by point id) and
    its diverged runs: read once for all the laws a refit fits on it."""

    rows: list[dict[str, Any]]
    values: dict[tuple[str, str], dict[str, Any]]
    diverged: list[tuple[str, str]]


def _succeeded(filters: Sequence[str]) -> tuple[Filters, tuple[Condition, ...]]:
    """The filters narrowed to succeeded runs, and the filters without their checkpoints choice."""
    rest = tuple(c for c in parse_filters(filters).conditions if c.key != "checkpoints")
    return Filters((*rest, Condition("status", "=", ("succeeded",)))), rest


def read(engine: Engine, filters: Sequence[str], pairs: Sequence[tuple[str, str]]) -> Read:
    """What :func:`load` reads for each of ``pairs``, read once for all of them."""
    succeeded, rest = _succeeded(filters)
    rows, _ = fetch(engine, succeeded, metrics=False)
    return Read(rows, metric_values(engine, succeeded, pairs), _diverged(engine, rest))


def load(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str, need_compute: bool = True,
    given: Read | None = None,
) -> tuple[list[Run], list[str], int, list[tuple[str, str]]]:  # fmt: skip
    """The family's succeeded runs with a value for dataset/metric, those without one, how
    many constant-LR checkpoints the selection left out, and the runs left out because their
    samples seen are not known (imported so), each with why; from ``given`` where the refit
    read them already."""
    parsed = parse_filters(filters)
    family = family_of(parsed)
    chosen = checkpoints_of(parsed)
    succeeded, rest = _succeeded(filters)
    if given is None:
        rows, metrics = fetch(engine, succeeded, only=(dataset, metric))
        values = {pid: v for pid, d, m, v in metrics if d == dataset and m == metric}
    else:
        rows, values = given.rows, given.values.get((dataset, metric), {})
    left_out = sum(1 for r in rows if r["from_checkpoint"]) if chosen == "final" else 0
    if chosen != "all":
        rows = [r for r in rows if bool(r["from_checkpoint"]) == (chosen == "only")]
    if not rows:
        raise ClipscaleError(f"no succeeded run of family {family} matches {' '.join(filters)}")
    if not any(values.get(r["id"]) is not None for r in rows):
        have = sorted({f"{d}/{m}" for _, d, m, _ in fetch(engine, succeeded)[1] if is_primary(m)})
        raise ClipscaleError(
            f"no run of family {family} has {dataset}/{metric}"
            + (f" (it has: {', '.join(have[:12])}{', …' if len(have) > 12 else ''})" if have else "")
        )
    runs, skipped, excluded = [], [], []
    for r in rows:
        value = values.get(r["id"])
        if value is None:
            skipped.append(r["id"])
            continue
        if r["samples_seen"] is None or (r["compute_gmacs"] is None and r["no_compute"]):
            excluded.append((r["id"], r["no_compute"] or "its samples seen are not known"))
            continue
        if r["compute_gmacs"] is None and need_compute:
            raise ClipscaleError(f"run {r['id']}: its compute is not known (no GMACs per sample)")
        runs.append(Run(r["id"], r["model"], r["data"], int(r["samples_seen"]), r["gmacs_per_sample"],
                        float(r["compute_gmacs"] if r["compute_gmacs"] is not None else "nan"), float(value),
                        r["params"], r["data_size"]))  # fmt: skip
    if not runs and excluded:
        raise ClipscaleError(f"no run of family {family} with {dataset}/{metric} has a known compute "
                             f"({len(excluded)} left out: {excluded[0][0]}: {excluded[0][1]})")  # fmt: skip
    return runs, skipped, left_out, excluded + (given.diverged if given else _diverged(engine, rest))


def _diverged(engine: Engine, rest: tuple[Condition, ...]) -> list[tuple[str, str]]:
    """The family's runs whose loss became NaN or infinite, with why: kept in the store and
    left out of its laws, which say so (unless the filters chose the runs' status themselves)."""
    if any(c.key == "status" for c in rest):
        return []
    rows, _ = fetch(engine, Filters((*rest, Condition("status", "=", ("diverged",)))), metrics=False)
    return [(r["id"], f"diverged: {r['error'] or 'the training loss became NaN or infinite'}") for r in rows]


def holds(engine: Engine, filters: Sequence[str], ids: Sequence[str]) -> bool:
    """Whether any of the points ``ids`` is among those the filters select."""
    return bool(among(engine, parse_filters(filters), ids))


def _in_group(filters: Sequence[str], group: Sequence[str]) -> list[str]:
    """The filters narrowed to a group's runs."""
    return [*filters, *group]


def metrics_of(engine: Engine, filters: Sequence[str], include_all: bool = False) -> list[tuple[str, str]]:
    """The (dataset, metric) pairs a family is fitted on by default."""
    have = {(d, m) for d, m in metric_names(engine, parse_filters(filters)) if is_primary(m)}
    headline = [p for p in HEADLINE if p in have]
    return headline if headline and not include_all else sorted(have)


_SIZE = re.compile(r"^(?P<source>.+?)(?:[-_]?\d+(?:\.\d+)?[kKmMbBtT]|[-_](?:small|medium|large|xlarge))$")


def source_of(data: str) -> str:
    """The data source of a data set: names that differ only in a size suffix (LAION-80M,
    LAION-400M, LAION-2B; toy-4k, toy-64k) or a DataComp pool scale (DataComp-small …
    DataComp-1B) are one source."""
    m = _SIZE.match(data)
    return m["source"] if m else data


# How runs are grouped into laws: by data source (LAION-80M … LAION-2B are one source), data
# set, model type (CLIP, SigLIP, CoCa), or all runs together.
GROUPINGS = ("source", "data", "model_type", "all")


def groups_of(engine: Engine, filters: Sequence[str], by: str = "source") -> dict[str, list[str]]:
    """The filters that select each group of the runs: {"LAION": ["data=[LAION-2B,LAION-400M]"]}
    by data source, {"siglip": ["model_type=siglip"]} by model type."""
    if by not in GROUPINGS:
        raise ClipscaleError(f"group={by!r}: use {', '.join(GROUPINGS)}")
    if by == "model_type":
        types = distinct(engine, parse_filters(filters), "model_type")
        return {t: [f"model_type={t}"] for t in sorted(types, key=_type_order)}
    data = sorted(distinct(engine, parse_filters(filters), "data"))
    if by == "all":
        return {"all runs": [_data_filter(data)]}
    if by == "data":
        return {d: [_data_filter([d])] for d in data}
    sources: dict[str, list[str]] = {}
    for d in data:
        sources.setdefault(source_of(d), []).append(d)
    return {k: [_data_filter(v)] for k, v in sorted(sources.items())}


def _data_filter(data: Sequence[str]) -> str:
    return f"data=[{','.join(data)}]"


def _type_order(model_type: str) -> tuple[int, str]:
    return (MODEL_TYPES.index(model_type) if model_type in MODEL_TYPES else len(MODEL_TYPES), model_type)


def model_gmacs(engine: Engine, family: str, model: str) -> float:
    """GMACs per sample of ``model``: as the family's runs record it (their median), else
    counted like `scaling plan` counts it (cached; torch is imported only to count)."""
    rows, _ = fetch(engine, parse_filters([f"family={family}", f"model={model}"]), metrics=False)
    found = [r["gmacs_per_sample"] for r in rows if r["gmacs_per_sample"]]
    if found:
        return float(np.median(found))
    from scaling.compute import macs_for, macs_key
    from scaling.config import Catalog, config_dirs

    spec = Catalog(config_dirs()).model(model)
    return macs_for([(spec, None, None, None)])[macs_key(spec, None, None, None)].total
