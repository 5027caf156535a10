"""CLIP_benchmark's result files as metrics of runs: ``scaling import DIR --format
clip_benchmark --family NAME``, DIR holding the JSON files ``clip_benchmark eval --output``
writes (one per model × pretrained × dataset × task).

A file's ``model`` and ``pretrained`` name the run it belongs to: a published checkpoint
by its tag (the run ``{model}_{tag}``, as `--format openclip` names it, so the two imports
meet), or one of our runs by its checkpoint's path (``…/<point id>/checkpoints/epoch_N.pt``).
A run the store does not have yet is added with what its tag says (data source, samples
seen; see store/openclip.py) and, with ``--profile``, its GMACs per sample; without them it
is listed and left out of compute laws, with the reason. Metrics are stored as the file
names them under its dataset (``wds/`` dropped; a language other than English appended),
a few-shot linear probe as ``lp_acc1_10shot``; retrieval gains DataComp's ``mean_recall@1``,
and a run with all 38 of DataComp's sets its average, ``datacomp38/average``. Every file is
read and checked before the store is opened; importing the same files again changes nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling.errors import ClipscaleError
from scaling.store.ingest import PointRow, _metric
from scaling.store.openclip import AGGREGATE, FLOPS_PER_MAC, SETS, parse_tag

KEYS = ("dataset", "model", "pretrained", "task", "metrics")
SETTINGS = {"weight_decay", "epochs", "seed", "fewshot_k", "normalized"}  # a linear probe's, not metrics
MAIN = {(d, m) for d, m in SETS.values()}


@dataclass(frozen=True)
class Result:
    """One result file: the run it belongs to (model, pretrained) and its metric rows."""

    path: Path
    model: str
    pretrained: str
    dataset: str
    values: dict[str, float]


def read_results(directory: Path) -> list[Result]:
    """Every ``*.json`` under ``directory``, checked; a bad file is named with its line."""
    if not directory.is_dir():
        raise ClipscaleError(f"{directory}: not a directory of CLIP_benchmark result files")
    files = sorted(directory.rglob("*.json"))
    if not files:
        raise ClipscaleError(f"{directory} holds no CLIP_benchmark result (*.json) files")
    return [_read(f) for f in files]


def _read(path: Path) -> Result:
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ClipscaleError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ClipscaleError(f"cannot read {path}: {e}") from None
    if not isinstance(raw, dict) or any(k not in raw for k in KEYS) or not isinstance(raw["metrics"], dict):
        raise ClipscaleError(f"{path}: not a CLIP_benchmark result (it needs {', '.join(KEYS)})")
    fields = {k: str(raw[k]).strip() for k in ("dataset", "model", "pretrained", "task")}
    if not all(fields.values()):
        raise ClipscaleError(f"{path}: dataset, model, pretrained and task must not be empty")
    dataset = fields["dataset"].removeprefix("wds/")
    language = str(raw.get("language") or "en")
    if language != "en":
        dataset += f"_{language}"
    metrics = raw["metrics"]
    shots = metrics.get("fewshot_k")
    suffix = f"_{int(shots)}shot" if isinstance(shots, int | float) and shots > 0 else ""
    values = {}
    for name, value in metrics.items():
        if name in SETTINGS:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ClipscaleError(f"{path}: metric {name} is {value!r}, not a finite number")
        values[name + (suffix if name.startswith("lp_") else "")] = float(value)
    recalls = [values.get(f"{side}_retrieval_recall@1") for side in ("image", "text")]
    if None not in recalls:
        values["mean_recall@1"] = math.fsum(r for r in recalls if r is not None) / 2
    return Result(path, fields["model"], fields["pretrained"], dataset, values)


def candidates(r: Result) -> list[str]:
    """The run ids a result could belong to, for asking the store which it has."""
    path = Path(r.pretrained)
    return [path.parent.parent.name, run_of(r.model, r.pretrained, set())]


def run_of(model: str, pretrained: str, known: set[str]) -> str:
    """The run a result belongs to: one of ours by its checkpoint's path, else ``model_tag``."""
    path = Path(pretrained)
    if path.suffix == ".pt" and path.parent.name == "checkpoints" and path.parent.parent.name in known:
        return path.parent.parent.name
    return f"{model}_{_tag(pretrained)}"


def _tag(pretrained: str) -> str:
    """A published checkpoint's tag, or a checkpoint file's name without ``.pt``."""
    path = Path(pretrained)
    return path.stem if path.suffix == ".pt" else pretrained


def rows(
    results: list[Result], known: set[str], flops: dict[str, float]
) -> tuple[list[PointRow], list[dict[str, Any]], list[str]]:
    """New points (runs the store lacks), every metric row (DataComp's average included),
    and the runs the store has already; ``flops``: GFLOPs per sample by model (the profile)."""
    points: dict[str, PointRow] = {}
    values: dict[str, dict[tuple[str, str], tuple[float, str]]] = {}
    for r in results:
        run = run_of(r.model, r.pretrained, known)
        if run not in known and run not in points:
            points[run] = _new_point(run, r, flops)
        by = values.setdefault(run, {})
        for metric, value in r.values.items():
            by[(r.dataset, metric)] = (value, str(r.path))
    metrics: list[dict[str, Any]] = []
    for run, by in values.items():
        metrics.extend(_metric(run, d, m, v, where) for (d, m), (v, where) in by.items())
        if set(by) >= MAIN:  # DataComp's 38 sets, each with its main metric
            mean = math.fsum(by[k][0] for k in MAIN) / len(MAIN)
            metrics.append(_metric(run, *AGGREGATE, mean, "the mean of DataComp's 38 sets"))
    return list(points.values()), metrics, sorted(set(values) & known)


def _new_point(run: str, r: Result, flops: dict[str, float]) -> PointRow:
    t = parse_tag(_tag(r.pretrained))
    gmacs = flops[r.model] / FLOPS_PER_MAC if r.model in flops else None
    why = t.why if t.samples is None else None
    if why is None and gmacs is None:
        why = f"GMACs per sample not known: {r.model} is not profiled (give --profile model_profile.csv)"
    config = {"imported": {"name": r.model, "pretrained": r.pretrained, "samples_seen": t.why}}
    return PointRow(run, r.model, t.data, t.samples, gmacs, "succeeded", "import", config, no_compute=why)
