"""open_clip's published results as runs: ``scaling import openclip_results.csv --format
openclip --family NAME`` (docs/openclip_results.csv, 121 pretrained checkpoints on DataComp's
38 evaluation sets, with docs/model_profile.csv for the compute per sample).

Each row is one checkpoint: its architecture is the run's model, the data source its
pretrained tag names (laion2b_s34b_b79k → LAION-2B) its data, and its samples seen what the
tag says (s34b → 34B, a rounded label), or for the tags whose scale a document fixes:
DataComp and CommonPool's pools seen once (docs/datacomp_models.md: 12.8M, 128M, 1.28B,
12.8B), OpenAI's 32 epochs of 400M pairs and MetaCLIP's 12.8B. Where nothing says (DFN,
WebLI, epoch tags, CLIPA's mixed-resolution schedules) the samples seen stay unknown and the
run is left out of compute laws with that reason. Compute per sample is the profile's
forward GFLOPs halved (open_clip's profiler counts a multiply-add as two FLOPs; the paper's
C is in GMACs). Every set's value is DataComp's main metric for it, stored under
CLIP_benchmark's dataset name, and the row's 38-set average as ``datacomp38/average``.
The whole file is checked before the store is opened; a bad row is named by its line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling.errors import ClipscaleError
from scaling.store.columns import read_with
from scaling.store.ingest import PointRow, _metric

# Each result column: (CLIP_benchmark dataset, DataComp's main metric for it), as DataComp's
# tasklist.yml names them (mlfoundations/datacomp at 4a8df19).
SETS: dict[str, tuple[str, str]] = {
    "ImageNet 1k": ("imagenet1k", "acc1"),
    "Caltech-101": ("vtab/caltech101", "mean_per_class_recall"),
    "CIFAR-10": ("cifar10", "acc1"),
    "CIFAR-100": ("vtab/cifar100", "acc1"),
    "CLEVR Counts": ("vtab/clevr_count_all", "acc1"),
    "CLEVR Distance": ("vtab/clevr_closest_object_distance", "acc1"),
    "Country211": ("country211", "acc1"),
    "Describable Textures": ("vtab/dtd", "acc1"),
    "EuroSAT": ("vtab/eurosat", "acc1"),
    "FGVC Aircraft": ("fgvc_aircraft", "mean_per_class_recall"),
    "Food-101": ("food101", "acc1"),
    "GTSRB": ("gtsrb", "acc1"),
    "ImageNet Sketch": ("imagenet_sketch", "acc1"),
    "ImageNet v2": ("imagenetv2", "acc1"),
    "ImageNet-A": ("imagenet-a", "acc1"),
    "ImageNet-O": ("imagenet-o", "acc1"),
    "ImageNet-R": ("imagenet-r", "acc1"),
    "KITTI Vehicle Distance": ("vtab/kitti_closest_vehicle_distance", "acc1"),
    "MNIST": ("mnist", "acc1"),
    "ObjectNet": ("objectnet", "acc1"),
    "Oxford Flowers-102": ("vtab/flowers", "mean_per_class_recall"),
    "Oxford-IIIT Pet": ("vtab/pets", "mean_per_class_recall"),
    "Pascal VOC 2007": ("voc2007", "acc1"),
    "PatchCamelyon": ("vtab/pcam", "acc1"),
    "Rendered SST2": ("renderedsst2", "acc1"),
    "RESISC45": ("vtab/resisc45", "acc1"),
    "Stanford Cars": ("cars", "acc1"),
    "STL-10": ("stl10", "acc1"),
    "SUN397": ("sun397", "acc1"),
    "SVHN": ("vtab/svhn", "acc1"),
    "Flickr": ("flickr30k", "mean_recall@1"),
    "MSCOCO": ("mscoco_captions", "mean_recall@1"),
    "WinoGAViL": ("misc/winogavil", "jaccard_score_10-12"),
    "iWildCam": ("wilds/iwildcam", "F1-macro_all"),
    "Camelyon17": ("wilds/camelyon17", "acc1"),
    "FMoW": ("wilds/fmow", "acc_worst_region"),
    "Dollar Street": ("fairness/dollar_street", "acc_top5_wg"),
    "GeoDE": ("fairness/geode", "acc_wg"),
}
AVERAGE = "Average perf. on 38 datasets"
AGGREGATE = ("datacomp38", "average")  # DataComp's headline: the mean of the 38 main metrics
HEAD = ("name", "pretrained", "FLOPs (B)")
PROFILE_HEAD = ("model", "gflops", "mparams")
FLOPS_PER_MAC = 2.0
TOLERANCE = 0.01  # the row's own GFLOPs against the profile's, relative; its average, absolute

# DataComp and CommonPool: a pool of N samples seen once at each scale (docs/datacomp_models.md).
POOL = {"s": 12_800_000, "m": 128_000_000, "l": 1_280_000_000, "xl": 12_800_000_000}
SCALE = {"s": "small", "m": "medium", "l": "large", "xl": "1B"}  # xlarge's filtered set is DataComp-1B
WIT = 12_800_000_000  # CLIP (Radford et al. 2021): 32 epochs of 400M pairs
METACLIP = 12_800_000_000  # MetaCLIP's README: 12.8B pairs seen, for both data sets
# Tag prefixes and the data source each names; the first that matches wins.
DATA = (
    ("mscoco_finetuned_laion2b", "LAION-2B"),
    ("frozen_laion5b", "LAION-5B"),
    ("laion_aesthetic", "LAION-Aesthetic"),
    ("laion2b", "LAION-2B"),
    ("laion400m", "LAION-400M"),
    ("laion5b", "LAION-5B"),
    ("merged2b", "Merged-2B"),
    ("datacomp", "DataComp-1B"),
    ("dfn5b", "DFN-5B"),
    ("dfn2b", "DFN-2B"),
    ("webli", "WebLI"),
    ("cc12m", "CC12M"),
    ("yfcc15m", "YFCC-15M"),
    ("openai", "CLIP-WIT"),
    ("metaclip_400m", "MetaCLIP-400M"),
    ("metaclip_fullcc", "MetaCLIP-2.5B"),
)
_POOL_TAG = re.compile(r"^(?P<pool>datacomp|commonpool)_(?P<scale>s|m|l|xl)(?:_(?P<filter>[a-z]+))?_s\d")
_SEEN = re.compile(r"(?:^|_)s(?P<n>\d+(?:\.\d+)?)(?P<unit>[mb])(?:_|$)")
_EPOCHS = re.compile(r"(?:^|_)e(?P<n>\d+)(?:_|$)")


@dataclass(frozen=True)
class Tag:
    """What a pretrained tag says: the data source, the samples seen and where that came from
    (or, where ``samples`` is None, why it is not known)."""

    data: str
    samples: int | None
    why: str


def parse_tag(tag: str) -> Tag:
    pool = _POOL_TAG.match(tag)
    if pool:
        name = "DataComp" if pool["pool"] == "datacomp" else "CommonPool"
        if pool["filter"]:
            name += f"-{pool['filter']}"
        scale = SCALE[pool["scale"]] if name == "DataComp" or pool["scale"] != "xl" else "xlarge"
        return Tag(f"{name}-{scale}", POOL[pool["scale"]], "docs/datacomp_models.md: the pool seen once")
    data = next((d for prefix, d in DATA if tag.startswith(prefix)), f"unknown ({tag})")
    if tag == "openai":
        return Tag(data, WIT, "CLIP: 32 epochs of 400M pairs")
    if tag.startswith("metaclip"):
        return Tag(data, METACLIP, "MetaCLIP's README: 12.8B pairs seen")
    seen = _SEEN.search(tag)
    if seen:
        unit = 1e9 if seen["unit"] == "b" else 1e6
        return Tag(
            data, round(float(seen["n"]) * unit), f"the tag's rounded label s{seen['n']}{seen['unit']}"
        )
    if _EPOCHS.search(tag):
        return Tag(data, None, f"samples seen not known: the tag {tag!r} counts epochs, not samples")
    if tag == "datacomp1b":
        return Tag(
            data, None, "samples seen not known: CLIPA's schedule mixes resolutions (tag 'datacomp1b')"
        )
    return Tag(data, None, f"samples seen not known: the tag {tag!r} does not say")


def read_openclip(path: Path, profile: Path | None) -> tuple[list[PointRow], list[dict[str, Any]]]:
    """Points and metric rows of open_clip's results table, every row checked."""
    profile = profile or path.with_name("model_profile.csv")
    if not profile.is_file():
        raise ClipscaleError(
            f"{profile}: no model profile (open_clip's docs/model_profile.csv): give --profile"
        )
    flops, params = read_profile(profile)
    rows = read_with(path, list(HEAD))
    points: list[PointRow] = []
    metrics: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        name, tag = (row.get("name") or "").strip(), (row.get("pretrained") or "").strip()
        if not name or not tag:
            raise ClipscaleError(f"{where}: name and pretrained must not be empty")
        key = f"{name}_{tag}"
        if key in first:
            raise ClipscaleError(f"{where}: {name} {tag} is already on line {first[key]}")
        first[key] = line
        if name not in flops:
            raise ClipscaleError(f"{where}: model {name} is not in {profile.name}")
        own = _value(row, "FLOPs (B)", where, positive=True)
        if abs(own - flops[name]) > TOLERANCE * flops[name]:
            raise ClipscaleError(
                f"{where}: FLOPs (B) {own:g} but {profile.name} has {flops[name]:g} for {name}"
            )
        t = parse_tag(tag)
        gmacs = flops[name] / FLOPS_PER_MAC
        points.append(PointRow(
            key, name, t.data, t.samples, gmacs, "succeeded", "import",
            {"imported": {"name": name, "pretrained": tag, "samples_seen": t.why}},
            params=params[name], no_compute=None if t.samples is not None else t.why,
        ))  # fmt: skip
        metrics.extend(_metrics(row, key, where))
    if not points:
        raise ClipscaleError(f"{path} holds no runs")
    return points, metrics


def _metrics(row: dict[str, str], point: str, where: str) -> list[dict[str, Any]]:
    out, values = [], []
    for column, (dataset, metric) in SETS.items():
        if not (row.get(column) or "").strip():
            continue
        value = _value(row, column, where)
        if not 0 <= value <= 1:
            raise ClipscaleError(f"{where}: {column} is {value:g}, outside [0, 1]")
        values.append(value)
        out.append(_metric(point, dataset, metric, value, where))
    if (row.get(AVERAGE) or "").strip():
        average = _value(row, AVERAGE, where)
        # DataComp's average is of all 38 sets: checked where the row has them all.
        if len(values) == len(SETS) and abs(average - math.fsum(values) / len(values)) > TOLERANCE:
            raise ClipscaleError(f"{where}: {AVERAGE} is {average:g}, not the mean of its 38 sets")
        out.append(_metric(point, *AGGREGATE, average, where))
    return out


def read_profile(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """open_clip's model_profile.csv: each model's forward GFLOPs per sample and parameters."""
    flops, params = {}, {}
    for line, row in enumerate(read_with(path, list(PROFILE_HEAD)), start=2):
        where = f"{path}:{line}"
        model = (row.get("model") or "").strip()
        flops[model] = _value(row, "gflops", where, positive=True)
        params[model] = _value(row, "mparams", where, positive=True) * 1e6
    return flops, params


def _value(row: dict[str, str], column: str, where: str, positive: bool = False) -> float:
    text = (row.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise ClipscaleError(f"{where}: {column} is not a number: {text!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise ClipscaleError(f"{where}: {column} must be a positive number, got {text!r}")
    return value
