"""Exact compute accounting: samples seen as open_clip counts them, MACs, GPU-hours.

The compute axis of a scaling law is C = GMACs per sample x samples seen, with GMACs the
forward multiply-accumulates of the image tower at its image size plus the text tower at
its context length (as the paper counts them). MACs are counted from the model definition
on torch's meta device (``scaling.profile``) and cached per architecture, so planning
imports no torch once the cache holds the sweep's models.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from scaling.config import GpuSpec, ModelSpec, TrainSettings, canonical_json
from scaling.errors import ClipscaleError
from scaling.files import write_atomic

CACHE_ENV = "CLIPSCALE_CACHE_DIR"
# Bump when the counting method changes, to invalidate caches (2: parameters; 3: CoCa's decoder).
COUNTER_VERSION = 3
TRAIN_FLOPS_PER_MAC = 6  # 2 FLOPs per MAC, and forward + backward = 3 x forward


@dataclass(frozen=True)
class SamplesPlan:
    epochs: int
    train_num_samples: int
    samples_per_epoch: int
    samples_seen: int
    steps: int

    def as_dict(self) -> dict[str, int]:
        return {
            "epochs": self.epochs,
            "train_num_samples": self.train_num_samples,
            "samples_per_epoch": self.samples_per_epoch,
            "samples_seen": self.samples_seen,
            "steps": self.steps,
        }


def trainer_epoch(train_num_samples: int, batch_size: int, world_size: int, workers: int) -> tuple[int, int]:
    """(batches, samples) of one training epoch, rounded as open_clip_train does.

    Mirrors ``open_clip_train.data.get_wds_dataset`` (3.3.0, training, ``floor=False``):
    round up to whole global batches, then to a multiple of the data-loader workers.
    """
    global_batch = batch_size * world_size
    num_batches = math.ceil(train_num_samples / global_batch)
    num_workers = max(1, workers)
    num_batches = math.ceil(num_batches / num_workers) * num_workers
    return num_batches, num_batches * global_batch


def plan_samples(target: int, data_size: int, train: TrainSettings, where: str = "") -> SamplesPlan:
    """Choose ``--epochs`` and ``--train-num-samples`` for ``target`` samples seen.

    Explicit values in ``train`` are kept. Otherwise an epoch is about ``epoch_samples``
    (default: one pass over the data set) and the per-epoch count is a whole number of
    the trainer's rounding quantum, so it passes through the trainer unchanged.
    """
    prefix = f"{where}: " if where else ""
    loader_batch = train.batch_size * train.gpus
    if target < train.global_batch_size:
        raise ClipscaleError(
            f"{prefix}samples seen {target:,} is smaller than one global batch ({train.global_batch_size:,})"
        )
    # Whole epochs of whole optimizer steps: batches per epoch divisible by workers and
    # by accum_freq, else the trainer's last partial accumulation is loaded but unused.
    quantum = loader_batch * math.lcm(max(1, train.workers), train.accum_freq)
    epochs = train.epochs
    if epochs is None:
        per_epoch = train.train_num_samples or train.epoch_samples or data_size
        epochs = max(1, round(target / per_epoch))
        if train.train_num_samples is None:
            epochs = _epochs_near(target, epochs, quantum)
    per_epoch_samples = train.train_num_samples
    if per_epoch_samples is None:
        per_epoch_samples = _quanta(target, epochs, quantum) * quantum
    num_batches, samples_per_epoch = trainer_epoch(
        per_epoch_samples, train.batch_size, train.gpus, train.workers
    )
    steps = (num_batches // train.accum_freq) * epochs
    return SamplesPlan(
        epochs=epochs,
        train_num_samples=per_epoch_samples,
        samples_per_epoch=samples_per_epoch,
        samples_seen=steps * train.global_batch_size,
        steps=steps,
    )


def _quanta(target: int, epochs: int, quantum: int) -> int:
    return max(1, round(target / (epochs * quantum)))


def _epochs_near(target: int, desired: int, quantum: int, tolerance: float = 0.01) -> int:
    """``desired`` epochs unless whole quanta per epoch then miss ``target`` by more than
    ``tolerance``; else the epoch count within 1.5x of it that misses least (the nearest
    to ``desired`` among equals)."""

    def miss(epochs: int) -> int:
        return abs(epochs * _quanta(target, epochs, quantum) * quantum - target)

    if miss(desired) <= tolerance * target:
        return desired
    low, high = max(1, math.ceil(desired / 1.5)), math.floor(desired * 1.5)
    candidates = range(low, min(high, low + 10_000) + 1)
    return min(candidates, key=lambda e: (miss(e), abs(math.log(e / desired))))


# ---------------------------------------------------------------- MACs per sample


@dataclass(frozen=True)
class Macs:
    """Forward multiply-accumulates per sample, in GMACs, and the model's parameters."""

    image: float
    text: float
    params: float = 0.0
    decoder: float = 0.0  # CoCa's captioning decoder, run on every training sample

    @property
    def total(self) -> float:
        return self.image + self.text + self.decoder


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipscale"


@functools.cache  # read once: package metadata is a file read, and a plan asks once per point
def _open_clip_version() -> str | None:
    try:
        return version("open_clip_torch")
    except PackageNotFoundError:
        return None


def macs_key(
    model: ModelSpec, image_size: int | None, context_length: int | None, patch_dropout: float | None
) -> str:
    """Cache key: the architecture as counted, and who defined it."""
    return canonical_json(
        {
            "counter": COUNTER_VERSION,
            "model": model.name,
            "config": model.open_clip_config,
            # A built-in architecture is whatever the installed open_clip says it is.
            "open_clip": _open_clip_version() if model.open_clip_config is None else None,
            "image_size": image_size,
            "context_length": context_length,
            "patch_dropout": patch_dropout,
        }
    )


class MacsCache:
    """A JSON file of MAC counts keyed by architecture, replaced atomically on save."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "macs.json"
        self.entries: dict[str, dict[str, float]] = {}
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self.entries = loaded
        except (OSError, ValueError):
            pass  # a missing or damaged cache only costs a recount

    def get(self, key: str) -> Macs | None:
        entry = self.entries.get(key)
        if not isinstance(entry, dict):
            return None
        try:
            return Macs(float(entry["image"]), float(entry["text"]), float(entry["params"]),
                        float(entry.get("decoder", 0.0)))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, key: str, macs: Macs) -> None:
        self.entries[key] = {"image": macs.image, "text": macs.text, "params": macs.params,
                             "decoder": macs.decoder}  # fmt: skip

    def save(self) -> None:
        # An unwritable cache only costs a recount next time.
        with contextlib.suppress(OSError):
            write_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True))


Arch = tuple[ModelSpec, int | None, int | None, float | None]


def macs_for(archs: Iterable[Arch], cache: MacsCache | None = None) -> dict[str, Macs]:
    """MACs for each (model, image_size, context_length, patch_dropout), keyed by macs_key.

    Only architectures missing from the cache are counted, which imports torch.
    """
    cache = cache if cache is not None else MacsCache()
    result: dict[str, Macs] = {}
    missing: dict[str, Arch] = {}
    for arch in archs:
        key = macs_key(*arch)
        found = cache.get(key)
        if found is not None:
            result[key] = found
        else:
            missing[key] = arch
    if missing:
        from scaling.profile import count_macs  # torch is needed only here

        for key, (model, image_size, context_length, patch_dropout) in missing.items():
            image, text, decoder, params = count_macs(model, image_size, context_length, patch_dropout)
            result[key] = Macs(image / 1e9, text / 1e9, params, decoder / 1e9)
            cache.put(key, result[key])
        cache.save()
    return result


# ---------------------------------------------------------------- cost


def gpu_hours(gmacs_per_sample: float, samples_seen: int, gpu: GpuSpec) -> float:
    """GPU-hours to train: 6 FLOPs per MAC per sample at ``gpu.mfu`` of the bf16 peak."""
    flops = TRAIN_FLOPS_PER_MAC * gmacs_per_sample * 1e9 * samples_seen
    return flops / (gpu.peak_tflops * 1e12 * gpu.mfu) / 3600


def measured_mfu(gmacs_per_sample: float, samples_per_sec: float, gpus: int, peak_tflops: float) -> float:
    """Model-FLOPs utilisation of a run from its measured throughput."""
    achieved = TRAIN_FLOPS_PER_MAC * gmacs_per_sample * 1e9 * samples_per_sec / gpus
    return achieved / (peak_tflops * 1e12)


def calibrate_mfu(runs: Iterable[dict[str, Any]], peak_tflops: float) -> float:
    """Median MFU over runs with keys ``gmacs``, ``samples_per_sec`` and ``gpus``."""
    mfus = [measured_mfu(r["gmacs"], r["samples_per_sec"], r["gpus"], peak_tflops) for r in runs]
    if not mfus:
        raise ClipscaleError("no runs to calibrate the utilisation on")
    return statistics.median(mfus)
