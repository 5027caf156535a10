"""Import any CSV of published runs by naming which column holds what:
``--columns params=N,samples_seen=D,train/loss=loss``.

Fields: model, params, gmacs (per sample), samples_seen, compute (in the table's own units),
data, data_size (unique samples of the data set), and metrics as DATASET/METRIC. Where a
table gives compute and model size but not samples seen (Chinchilla's C ≈ 6·N·D),
``flops_per_param`` derives the missing one. The whole file is read and checked before
the store is opened: a bad row is reported with its line number and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from scaling.errors import ClipscaleError
from scaling.store.ingest import PointRow, _metric, read_csv
from scaling.store.ingest import _number as read_number

FIELDS = ("model", "params", "gmacs", "samples_seen", "compute", "data", "data_size")
NUMERIC = ("params", "gmacs", "samples_seen", "compute", "data_size")


def parse_mapping(text: str) -> dict[str, str]:
    """``FIELD=COLUMN,…`` into {field: column}; metrics are DATASET/METRIC fields."""
    mapping: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        field, eq, column = item.partition("=")
        field, column = field.strip(), column.strip()
        if not eq or not field or not column:
            raise ClipscaleError(f"--columns: {item!r} is not FIELD=COLUMN")
        if field not in FIELDS and not _is_metric(field):
            raise ClipscaleError(
                f"--columns: unknown field {field!r} (valid: {', '.join(FIELDS)}, or DATASET/METRIC)"
            )
        if field in mapping:
            raise ClipscaleError(f"--columns: {field} is named twice")
        mapping[field] = column
    if not any(_is_metric(f) for f in mapping):
        raise ClipscaleError("--columns: name at least one metric as DATASET/METRIC=COLUMN")
    has = set(mapping)
    if "samples_seen" not in has and not ({"compute", "gmacs"} <= has or {"compute", "params"} <= has):
        raise ClipscaleError("--columns: give samples_seen, or compute with gmacs or params")
    return mapping


def _is_metric(field: str) -> bool:
    dataset, slash, metric = field.partition("/")
    return bool(slash and dataset.strip() and metric.strip())


def read_with(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """The rows of a CSV file that has every one of ``columns``."""
    header, rows = read_csv(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise ClipscaleError(f"{path}: no column {', '.join(repr(c) for c in missing)}")
    return rows


def read_columns(
    path: Path, mapping: dict[str, str], family: str, flops_per_param: float | None = None
) -> tuple[list[PointRow], list[dict[str, Any]]]:
    """Points and metric rows of the file, every row checked."""
    rows = read_with(path, list(mapping.values()))
    if not rows:
        raise ClipscaleError(f"{path} holds no runs")
    points, metrics = [], []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        values = _numbers(row, mapping, where)
        point = _point(row, mapping, values, family, where, flops_per_param)
        occurrence = seen.get(point.id, 0)  # identical rows stay distinct runs
        seen[point.id] = occurrence + 1
        if occurrence:
            point = replace(point, id=f"{point.id}-{occurrence}")
        points.append(point)
        for field, column in mapping.items():
            if _is_metric(field):
                text = (row.get(column) or "").strip()
                if text:
                    dataset, metric = field.split("/", 1)
                    value = _number(text, column, where, positive=False)
                    metrics.append(_metric(point.id, dataset.strip(), metric.strip(), value, where))
    return points, metrics


def _number(text: str, column: str, where: str, positive: bool = True) -> float:
    value = read_number(text, column, where)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ClipscaleError(f"{where}: {column} must be a positive number, got {text!r}")
    return value


def _numbers(row: dict[str, str], mapping: dict[str, str], where: str) -> dict[str, float]:
    out = {}
    for field in NUMERIC:
        if field in mapping:
            text = (row.get(mapping[field]) or "").strip()
            if not text:
                raise ClipscaleError(f"{where}: {mapping[field]} is empty")
            out[field] = _number(text, mapping[field], where)
    return out


def _point(
    row: dict[str, str], mapping: dict[str, str], v: dict[str, float], family: str, where: str,
    flops_per_param: float | None,
) -> PointRow:  # fmt: skip
    samples, compute, gmacs = v.get("samples_seen"), v.get("compute"), v.get("gmacs")
    if samples is None and compute is not None:
        if gmacs is not None:
            samples = compute / gmacs
        elif flops_per_param:
            samples = compute / (flops_per_param * v["params"])
        else:
            raise ClipscaleError(f"{where}: no samples seen: give --flops-per-param (C = k·N·D) or gmacs")
    assert samples is not None
    if compute is None and gmacs is None and flops_per_param and "params" in v:
        compute = flops_per_param * v["params"] * samples
    model = (row.get(mapping["model"]) or "").strip() if "model" in mapping else ""
    if not model:
        model = f"N={v['params']:.4g}" if "params" in v else f"G={gmacs:.4g}" if gmacs else "model"
    data = (row.get(mapping["data"]) or "").strip() if "data" in mapping else ""
    data = data or family
    key = {"model": model, "data": data, **{k: v[k] for k in sorted(v)}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    config = {"imported": {k: row.get(c) for k, c in mapping.items()}}
    return PointRow(
        f"{model}_{data}_{samples:.4g}_{digest}".replace(" ", "_"), model, data, max(round(samples), 1),
        gmacs if gmacs is not None else (compute / samples if compute is not None else None), "succeeded",
        "import", config, compute=compute, params=v.get("params"),
        data_size=round(v["data_size"]) if "data_size" in v else None,
    )  # fmt: skip
