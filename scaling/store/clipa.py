"""CLIPA's published results as runs: ``scaling import clipa_readme_tables.csv --format clipa
--family NAME`` (the README tables of UCSC-VLAA/CLIPA and open_clip's docs/clipa.md).

Each row is one published checkpoint: its model (``CLIPA-v1 B/16``), pre-training data, stage
(pre-trained at reduced tokens, or after the full-token fine-tune), the image and text tokens
of its pre-training and its zero-shot ImageNet top-1 (stored as ``imagenet1k/acc1``). CLIPA-v1
names image tokens (``I50``); CLIPA-v2 gives the image side in pixels, so its tokens are its
patches plus the class token. No row says GMACs per sample at its reduced tokens, so the runs
have no compute: they are points of the inverse-scaling view (``scaling report``), not of
compute laws. The same checkpoint printed in two sources is one run; the whole file is
checked before the store is opened, and a bad row is named by its line.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from scaling.errors import ClipscaleError
from scaling.store.columns import read_number, read_with
from scaling.store.ingest import PointRow, _metric

HEAD = ["version", "model", "data", "stage", "pretrain_image_tokens", "pretrain_image_res_px",
        "pretrain_text_tokens", "schedule", "zeroshot_in1k_top1"]  # fmt: skip
NO_COMPUTE = "CLIPA's tables give no GMACs per sample at the reduced tokens"
_PATCH = re.compile(r"/(\d+)$")


def read_clipa(path: Path) -> tuple[list[PointRow], list[dict[str, Any]]]:
    """Points and metric rows of CLIPA's tables, every row checked."""
    points: dict[str, PointRow] = {}
    metrics: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    for line, row in enumerate(read_with(path, HEAD), start=2):
        where = f"{path}:{line}"
        point, metric = _row(row, where)
        if point.id in points:
            if metrics[point.id]["value"] != metric["value"]:
                raise ClipscaleError(f"{where}: {point.model} ({point.config['clipa']['schedule']}) has "
                                     f"top-1 {metric['value']:g}, but line {lines[point.id]} has "
                                     f"{metrics[point.id]['value']:g}")  # fmt: skip
            continue  # the same checkpoint, printed in a second source
        points[point.id], metrics[point.id], lines[point.id] = point, metric, line
    if not points:
        raise ClipscaleError(f"{path} holds no runs")
    return list(points.values()), list(metrics.values())


def _row(row: dict[str, str], where: str) -> tuple[PointRow, dict[str, Any]]:
    version, arch, data = (row[k].strip() for k in ("version", "model", "data"))
    if not version or not arch or not data:
        raise ClipscaleError(f"{where}: version, model and data must not be empty")
    stage = 2 if "after fine-tune" in row["stage"] else 1
    image = _tokens(row, arch, where)
    text = _count(row["pretrain_text_tokens"], "pretrain_text_tokens", where)
    top1 = read_number(row["zeroshot_in1k_top1"], "zeroshot_in1k_top1", where)
    if not 0 <= top1 <= 100:
        raise ClipscaleError(f"{where}: zeroshot_in1k_top1 is {top1:g}, outside [0, 100]")
    model = f"{version} {arch}"
    key = {"model": model, "data": data, "stage": stage, "image_tokens": image, "text_tokens": text,
           "schedule": row["schedule"].strip()}  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{model}_{data}_I{image}_T{text or 'x'}_s{stage}")
    config = {"stage": stage, "image_tokens": image, "text_tokens": text, "clipa": key}
    point = PointRow(f"{label}_{digest}", model, data, None, None, "succeeded", "import", config,
                     no_compute=NO_COMPUTE)  # fmt: skip
    return point, _metric(point.id, "imagenet1k", "acc1", top1 / 100, where)


def _tokens(row: dict[str, str], arch: str, where: str) -> int:
    """CLIPA-v1's image tokens as named; CLIPA-v2's from its image side and patch size."""
    if row["pretrain_image_tokens"].strip():
        return _count(row["pretrain_image_tokens"], "pretrain_image_tokens", where) or 0
    side = _count(row["pretrain_image_res_px"], "pretrain_image_res_px", where)
    patch = _PATCH.search(arch)
    if side is None or patch is None:
        raise ClipscaleError(
            f"{where}: no pretrain_image_tokens, nor an image side and a patch size ({arch!r})"
        )
    return (side // int(patch[1])) ** 2 + 1


def _count(text: str, column: str, where: str) -> int | None:
    if not text.strip():
        return None
    value = read_number(text, column, where)
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise ClipscaleError(f"{where}: {column} must be a positive whole number, got {text.strip()!r}")
    return int(value)
