"""Which runs a law stands on: a family's runs selected by filters, one metric as an error,
the default metrics, and the groups (data source, data set, model type) laws are fitted per."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple, overload

import numpy as np
from numpy.typing import NDArray
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
    point_columns,
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
    values = _column(runs, "value")
    return values if lower_is_better(metric) else 1.0 - values


def compute_of(runs: Sequence[Run]) -> Array:
    """C of each run (GMACs), the law's axis."""
    return _column(runs, "compute")


def _column(runs: Sequence[Run], name: str) -> Array:
    if isinstance(runs, Runs):
        return runs.columns[name]
    return np.fromiter((getattr(r, name) for r in runs), dtype=np.float64, count=len(runs))


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


class Runs(Sequence[Run]):
    """The runs a law stands on as columns, one array per field of :class:`Run` (compute and
    value as floats): a refit of 100,000 runs × 10 metrics takes each law's runs as a
    selection of its group's columns, not a million tuples. Iterating gives Run tuples."""

    __slots__ = ("_ids", "columns")

    def __init__(self, columns: dict[str, Array]) -> None:
        self.columns = {f: columns[f] for f in Run._fields}  # Run's order: rows are zipped from it
        for column in self.columns.values():
            column.flags.writeable = False  # a law's runs do not change under it
        self._ids: list[str] | None = None

    @classmethod
    def of(cls, runs: Iterable[Run]) -> Runs:
        rows = list(runs)
        return cls({f: np.array([getattr(r, f) for r in rows], dtype=np.float64 if f in _FLOATS else object)
                    for f in Run._fields})  # fmt: skip

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = list(self.columns["id"].tolist())
        return list(self._ids)

    def take(self, index: Any) -> Runs:
        """The runs at ``index`` (positions or a mask), as columns."""
        return Runs({f: c[index] for f, c in self.columns.items()})

    def __len__(self) -> int:
        return len(self.columns["id"])

    def __iter__(self) -> Iterator[Run]:
        return map(Run._make, zip(*(c.tolist() for c in self.columns.values()), strict=True))

    @overload
    def __getitem__(self, i: int) -> Run: ...
    @overload
    def __getitem__(self, i: slice) -> Runs: ...
    def __getitem__(self, i: int | slice) -> Run | Runs:
        if isinstance(i, slice):
            return self.take(i)
        return Run._make(c[i].item() if f in _FLOATS else c[i] for f, c in self.columns.items())

    def __repr__(self) -> str:
        return f"Runs({len(self)} runs)"


_FLOATS = ("compute", "value")


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


# The point columns a law reads: Run's, what decides whether a run is one of its runs, and
# what its groups are told apart by (see groups_of).
_COLUMNS = ("id", "model", "data", "samples_seen", "gmacs_per_sample", "compute_gmacs", "params", "data_size",
            "from_checkpoint", "no_compute", "status", "error", "model_type")  # fmt: skip
_DIVERGED = "the training loss became NaN or infinite"


@dataclass(frozen=True)
class Read:
    """A selection's succeeded and diverged runs as columns (in the store's order: compute,
    then id), and the values of the metrics asked, aligned with them (NaN where a run has
    none): read once for all the laws a refit fits on it."""

    columns: dict[str, NDArray[Any]]  # _COLUMNS, compute as floats (NaN where not known)
    values: dict[tuple[str, str], Array]

    def narrowed(self, keep: NDArray[np.bool_]) -> Read:
        """The runs where ``keep`` holds (a group of the selection), in the same order."""
        return Read(
            {k: v[keep] for k, v in self.columns.items()}, {k: v[keep] for k, v in self.values.items()}
        )

    def matching(self, filters: Sequence[str]) -> NDArray[np.bool_] | None:
        """Which runs the filters select, where they only name values of columns read here
        (a group's ``data=[…]`` or ``model_type=…``, as groups_of makes them; exact text, as
        the store compares it); None where only the store can tell."""
        keep = np.ones(len(self.columns["id"]), dtype=bool)
        for c in parse_filters(filters).conditions:
            if c.op != "=" or c.key not in ("data", "model_type"):
                return None
            keep &= np.isin(self.columns[c.key], np.array(c.values, dtype=object))
        return keep

    @cached_property
    def unknown(self) -> Array:
        """Why each run is left out for its compute (None where it is not): its samples seen
        are not known, or its compute is not and the store says why (imported so)."""
        c, unsaid = self.columns, "its samples seen are not known"
        return np.array([why or unsaid if s is None or (math.isnan(gmacs) and why) else None
                         for s, gmacs, why in zip(c["samples_seen"], c["compute_gmacs"], c["no_compute"],
                                                  strict=True)], dtype=object)  # fmt: skip

    @cached_property
    def known(self) -> NDArray[np.bool_]:
        """The runs not left out for their compute."""
        return np.array([why is None for why in self.unknown], dtype=bool)

    @cached_property
    def succeeded(self) -> NDArray[np.bool_]:
        return np.asarray(self.columns["status"] == "succeeded", dtype=bool)

    @cached_property
    def diverged(self) -> list[tuple[str, str]]:
        """The runs whose loss became NaN or infinite, with why: kept in the store and left out
        of the laws, which say so."""
        at, c = self.columns["status"] == "diverged", self.columns
        return [(i, f"diverged: {why or _DIVERGED}")
                for i, why in zip(c["id"][at].tolist(), c["error"][at].tolist(), strict=True)]  # fmt: skip


def _unchosen(filters: Sequence[str]) -> tuple[Condition, ...]:
    """The filters without their checkpoints choice (load makes it from the columns read)."""
    return tuple(c for c in parse_filters(filters).conditions if c.key != "checkpoints")


def _succeeded(filters: Sequence[str]) -> Filters:
    """The filters narrowed to succeeded runs, without their checkpoints choice."""
    return Filters((*_unchosen(filters), Condition("status", "=", ("succeeded",))))


def read(engine: Engine, filters: Sequence[str], pairs: Sequence[tuple[str, str]]) -> Read:
    """What :func:`load` reads for each of ``pairs``, read once for all of them: the selection's
    succeeded runs, and its diverged ones unless the filters chose the runs' status themselves."""
    rest = _unchosen(filters)
    said = any(c.key == "status" for c in rest)
    statuses = ("succeeded",) if said else ("succeeded", "diverged")
    rows = point_columns(engine, Filters((*rest, Condition("status", "=", statuses))), _COLUMNS)
    values = metric_values(engine, _succeeded(filters), pairs, rows["id"])
    columns = {k: np.array(v, dtype=object) for k, v in rows.items()}
    columns["compute_gmacs"] = np.array(
        [np.nan if c is None else c for c in rows["compute_gmacs"]], np.float64
    )
    columns["from_checkpoint"] = np.array(rows["from_checkpoint"], dtype=bool)
    diverged = columns["status"] == "diverged"
    for v in values.values():
        v[diverged] = np.nan  # a diverged run's evaluation is not a point of any law
    return Read(columns, values)


def read_groups(
    engine: Engine, filters: Sequence[str], groups: dict[str, list[str]], pairs: Sequence[tuple[str, str]]
) -> dict[str, Read]:
    """:func:`read` for each group of the filters' runs: the runs and values read once for all
    groups, each group the runs its own filters select (one group alone is read alone)."""
    if len(groups) == 1:
        return {name: read(engine, _in_group(filters, group), pairs) for name, group in groups.items()}
    whole = read(engine, filters, pairs)

    def of(group: list[str]) -> Read:
        keep = whole.matching(group)
        if keep is None:
            ids = distinct(engine, parse_filters(_in_group(filters, group)), "id")
            keep = np.fromiter((i in ids for i in whole.columns["id"]), bool, len(whole.columns["id"]))
        return whole.narrowed(keep)

    return {name: of(group) for name, group in groups.items()}


def load(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str, need_compute: bool = True,
    given: Read | None = None,
) -> tuple[Runs, list[str], int, list[tuple[str, str]]]:  # fmt: skip
    """The family's succeeded runs with a value for dataset/metric, those without one, how
    many constant-LR checkpoints the selection left out, and the runs left out because their
    samples seen are not known (imported so), each with why; from ``given`` where the refit
    read them already."""
    parsed = parse_filters(filters)
    family = family_of(parsed)
    chosen = checkpoints_of(parsed)
    got = given if given is not None else read(engine, filters, [(dataset, metric)])
    cols = got.columns
    value = got.values.get((dataset, metric), np.full(len(cols["id"]), np.nan))
    succeeded = got.succeeded
    left_out = int((succeeded & cols["from_checkpoint"]).sum()) if chosen == "final" else 0
    rows = succeeded & (cols["from_checkpoint"] == (chosen == "only") if chosen != "all" else True)
    if not rows.any():
        raise ClipscaleError(f"no succeeded run of family {family} matches {' '.join(filters)}")
    has = rows & ~np.isnan(value)
    if not has.any():
        found = fetch(engine, _succeeded(filters))[1]
        have = sorted({f"{d}/{m}" for _, d, m, _ in found if is_primary(m)})
        raise ClipscaleError(
            f"no run of family {family} has {dataset}/{metric}"
            + (f" (it has: {', '.join(have[:12])}{', …' if len(have) > 12 else ''})" if have else "")
        )
    ids, compute, why = cols["id"], cols["compute_gmacs"], got.unknown
    out = has & ~got.known
    skipped = ids[rows & ~has].tolist()
    excluded = list(zip(ids[out].tolist(), why[out].tolist(), strict=True))
    keep = has & ~out
    no_compute = np.flatnonzero(keep & np.isnan(compute))
    if need_compute and len(no_compute):
        raise ClipscaleError(f"run {ids[no_compute[0]]}: its compute is not known (no GMACs per sample)")
    mine = _taken(keep)
    runs = Runs({f: mine(cols[f]) for f in Run._fields if f not in _FLOATS}
                | {"compute": mine(compute), "value": mine(value)})  # fmt: skip
    if not len(runs) and excluded:
        raise ClipscaleError(f"no run of family {family} with {dataset}/{metric} has a known compute "
                             f"({len(excluded)} left out: {excluded[0][0]}: {excluded[0][1]})")  # fmt: skip
    return runs, skipped, left_out, excluded + got.diverged


def _taken(keep: NDArray[np.bool_]) -> Callable[[NDArray[Any]], NDArray[Any]]:
    """Where every run is kept, a column as it is (a refit's laws share their group's columns)."""
    return (lambda column: column) if keep.all() else (lambda column: column[keep])


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
