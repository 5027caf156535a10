"""Compute accounting: MACs against the paper, samples seen against open_clip, cost."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from scaling.compute import (
    MacsCache,
    calibrate_mfu,
    gpu_hours,
    macs_for,
    macs_key,
    measured_mfu,
    plan_samples,
    trainer_epoch,
)
from scaling.config import GpuSpec, ModelSpec, TrainSettings, load_sweep
from scaling.errors import ClipscaleError
from scaling.plan import plan

# GMACs per sample in the paper (fvcore, 224 px, 77 tokens): its compute axis.
PAPER_GMACS = {
    "ViT-B-32": 7.40,
    "ViT-B-16": 20.57,
    "ViT-L-14": 87.73,
    "ViT-H-14": 190.97,
    "ViT-g-14": 290.74,
    "ViT-bigG-14": 532.92,
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def builtin(name: str) -> ModelSpec:
    return ModelSpec(name, "open_clip built-in")


def count(
    model: ModelSpec, image_size: int | None = None, context: int | None = None, dropout: float | None = None
):
    arch = (model, image_size, context, dropout)
    return macs_for([arch])[macs_key(*arch)]


@pytest.mark.torch
@pytest.mark.parametrize("name", list(PAPER_GMACS))
def test_macs_match_the_paper_within_one_percent(name: str) -> None:
    macs = count(builtin(name))
    assert macs.total == pytest.approx(PAPER_GMACS[name], rel=0.01)


@pytest.mark.torch
def test_image_and_text_parts_match_the_paper_table(shared: Path) -> None:
    rows = {r["model"]: r for r in read_csv(shared / "arch_info.csv")}
    for name in PAPER_GMACS:
        row = rows["ViT-G-14" if name == "ViT-bigG-14" else name]
        macs = count(builtin(name))
        assert macs.image == pytest.approx(float(row["image_gmacs"]), rel=0.01)
        assert macs.text == pytest.approx(float(row["text_gmacs"]), rel=0.01)
        assert macs.total == pytest.approx(float(row["gmacs"]), rel=0.01)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["coca_ViT-B-32", "coca_ViT-L-14"])
def test_coca_macs_count_its_decoder_as_open_clips_profiler_does(name: str) -> None:
    # open_clip's model_profile.csv counts the whole forward (FLOPs = 2 MACs): CoCa's decoder
    # is more than half of coca_ViT-B-32's compute.
    profile = REPO.parent / "shared" / "external-data" / "open_clip-docs" / "model_profile.csv"
    if not profile.is_file():
        pytest.skip("../shared open_clip profile is not present")
    row = {r["model"]: r for r in read_csv(profile)}[name]
    macs = count(builtin(name))
    assert macs.image == pytest.approx(float(row["image_gflops"]) / 2, rel=0.01)
    assert macs.text == pytest.approx(float(row["text_gflops"]) / 2, rel=0.01)
    assert macs.total == pytest.approx(float(row["gflops"]) / 2, rel=0.015)
    assert macs.decoder > macs.image + macs.text if name == "coca_ViT-B-32" else macs.decoder > 0


@pytest.mark.torch
def test_clipa_token_reductions_lower_the_counted_macs() -> None:
    b16 = builtin("ViT-B-16")
    full = count(b16)
    small = count(b16, image_size=112)  # 49 patches instead of 196
    short = count(b16, context=16)
    dropped = count(b16, dropout=0.5)  # half the patches, while training
    # Linear layers dominate, so image MACs scale about with tokens (50 vs 197).
    assert small.image / full.image == pytest.approx(50 / 197, rel=0.08)
    assert small.text == full.text
    assert short.text / full.text == pytest.approx(16 / 77, rel=0.08)
    assert short.image == full.image
    assert dropped.image / full.image == pytest.approx(99 / 197, rel=0.08)


_COUNT_THEN_LOG = """
import logging
from scaling.config import ModelSpec
from scaling.profile import count_macs

image, text, decoder, params = count_macs(ModelSpec("ViT-B-32", "open_clip built-in"))
assert image > 0 and text > 0 and decoder == 0 and abs(params - 151.28e6) < 0.01e6  # profile: 151.28M
root = logging.getLogger()
print(root.handlers, logging.getLevelName(root.level))
"""


@pytest.mark.torch
def test_counting_macs_leaves_the_root_logger_as_it_was() -> None:
    # open_clip's first root-logger message used to basicConfig the process (and the count
    # raised the root level to ERROR for good): a later quiet trainer run logged to stderr.
    out = subprocess.run([sys.executable, "-c", _COUNT_THEN_LOG], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "WARNING"] and out.stderr == "", (out.stdout, out.stderr)


@pytest.mark.torch
def test_toy_family_grows_in_compute() -> None:
    spec = load_sweep("toy", ["model=[toy-xs,toy-s,toy-m,toy-l,toy-xl]"])
    totals = [count(spec.models[n]).total for n in ("toy-xs", "toy-s", "toy-m", "toy-l", "toy-xl")]
    assert totals == sorted(totals) and totals[-1] / totals[0] > 50


@pytest.mark.torch
def test_two_stage_compute_is_the_sum_of_its_stages() -> None:
    records = plan("clipa").records()
    by_id = {r["id"]: r for r in records}
    for r in records:
        assert r["stage_compute_gmacs"] == pytest.approx(r["gmacs_per_sample"] * r["samples_seen"])
        if r["parent"]:
            parent = by_id[r["parent"]]
            assert r["compute_gmacs"] == pytest.approx(parent["compute_gmacs"] + r["stage_compute_gmacs"])
            assert r["image_size"] == 224 and parent["image_size"] < 224
            assert r["gmacs_per_sample"] > parent["gmacs_per_sample"]
        else:
            assert r["compute_gmacs"] == r["stage_compute_gmacs"]


def test_cached_plan_imports_no_torch(tmp_path: Path) -> None:
    # Warm the cache, then plan again in a fresh interpreter and look at its modules.
    env = {**os.environ, "CLIPSCALE_CACHE_DIR": str(tmp_path)}
    code = (
        "import sys, json; from scaling.plan import plan; n = len(plan('paper').records());"
        "print(json.dumps([n, 'torch' in sys.modules, 'open_clip' in sys.modules]))"
    )
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(first.stdout) == [29, True, True]
    assert json.loads(second.stdout) == [29, False, False]
    # Nor does the command import the store's SQLAlchemy (0.2 s of its start-up): it opens none.
    command = ("import sys\nfrom scaling.cli import main\ntry:\n    main(['plan', 'sweep=paper'])\n"
               "except SystemExit:\n    pass\n"
               "print(sorted(m for m in ('sqlalchemy', 'torch') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", command], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]


def test_damaged_cache_is_recounted(tmp_path: Path) -> None:
    path = tmp_path / "macs.json"
    path.write_text("{not json")
    cache = MacsCache(path)
    assert cache.entries == {}
    key = macs_key(builtin("ViT-B-32"), None, None, None)
    macs = macs_for([(builtin("ViT-B-32"), None, None, None)], cache)[key]
    assert json.loads(path.read_text())[key]["image"] == macs.image


# ---------------------------------------------------------------- samples seen


def settings(**kw: object) -> TrainSettings:
    base: dict[str, object] = {"lr": 1e-3, "warmup": 0, "batch_size": 256, "gpus": 8, "workers": 4}
    return TrainSettings(**{**base, **kw})  # type: ignore[arg-type]


def test_trainer_rounding_example_from_open_clip() -> None:
    # LAION-2B 1/16 epochs, 824 GPUs x 96, 8 workers: 136,058,880 samples per epoch.
    assert trainer_epoch(135_646_078, 96, 824, 8) == (1720, 136_058_880)


@pytest.mark.parametrize("target", [4_000, 16_000, 64_000, 3_000_000_000, 12_800_000_000, 34_000_000_000])
@pytest.mark.parametrize(
    ("batch", "gpus", "workers", "accum"), [(64, 1, 1, 1), (256, 344, 8, 1), (96, 8, 6, 4)]
)
def test_planned_samples_are_exact_and_close_to_the_target(
    target: int, batch: int, gpus: int, workers: int, accum: int
) -> None:
    t = settings(batch_size=batch, gpus=gpus, workers=workers, accum_freq=accum)
    if target < t.global_batch_size:
        with pytest.raises(ClipscaleError, match="smaller than one global batch"):
            plan_samples(target, 407_332_084, t)
        return
    p = plan_samples(target, 407_332_084, t)
    # The chosen per-epoch count passes through the trainer's rounding unchanged.
    assert trainer_epoch(p.train_num_samples, batch, gpus, workers)[1] == p.train_num_samples
    assert p.samples_seen == p.epochs * p.samples_per_epoch == p.steps * t.global_batch_size
    quantum = batch * gpus * math.lcm(max(1, workers), accum)
    assert abs(p.samples_seen - target) <= p.epochs * quantum / 2 or p.samples_seen == p.epochs * quantum


def test_epochs_follow_the_data_set_or_epoch_samples() -> None:
    t = settings()
    assert plan_samples(13_000_000_000, 407_332_084, t).epochs == 32
    assert plan_samples(13_000_000_000, 2_170_337_248, t).epochs == 6
    assert plan_samples(13_000_000_000, 2_170_337_248, settings(epoch_samples=135_646_078)).epochs == 96
    # A target below one pass over the data is one epoch.
    assert plan_samples(1_000_000, 407_332_084, t).epochs == 1


def test_explicit_epochs_and_samples_are_kept_and_rounded_like_the_trainer() -> None:
    t = settings(batch_size=672, gpus=128, workers=8, epochs=32, train_num_samples=413_000_000)
    p = plan_samples(13_000_000_000, 407_332_084, t)
    assert (p.epochs, p.train_num_samples) == (32, 413_000_000)
    assert p.samples_per_epoch == trainer_epoch(413_000_000, 672, 128, 8)[1]
    assert p.samples_seen == 32 * p.samples_per_epoch


def test_samples_below_one_global_batch_are_rejected() -> None:
    with pytest.raises(
        ClipscaleError, match=r"samples seen 1,000 is smaller than one global batch \(2,048\)"
    ):
        plan_samples(1_000, 10_000, settings())


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # never iterated here
@pytest.mark.parametrize(
    ("num_samples", "batch", "world", "workers"),
    [(1000, 32, 1, 2), (1000, 64, 1, 3), (999, 7, 1, 0), (5000, 16, 4, 2), (135_646_078, 96, 824, 8)],
)
def test_rounding_equals_open_clips_own_data_pipeline(
    tmp_path: Path, num_samples: int, batch: int, world: int, workers: int
) -> None:
    """Build open_clip_train's real webdataset loader and compare its epoch size."""
    from open_clip_train.data import get_wds_dataset
    from open_clip_train.params import parse_args

    shards = write_tiny_shards(tmp_path, shards=2, per_shard=8)
    args = parse_args(
        ["--train-data", shards, "--dataset-type", "webdataset", "--dataset-resampled",
         "--train-num-samples", str(num_samples), "--batch-size", str(batch), "--workers", str(workers)]
    )  # fmt: skip
    args.world_size = world
    info = get_wds_dataset(args, _to_tensor, is_train=True, epoch=0, tokenizer=_tokenize)
    assert (info.dataloader.num_batches, info.dataloader.num_samples) == trainer_epoch(
        num_samples, batch, world, workers
    )


@pytest.mark.torch
def test_planned_epoch_is_what_the_loader_really_yields(tmp_path: Path) -> None:
    """Iterate open_clip's loader for one epoch and count the samples it hands out."""
    from open_clip_train.data import get_wds_dataset
    from open_clip_train.params import parse_args

    t = settings(batch_size=16, gpus=1, workers=2)
    p = plan_samples(200, 40, t)
    shards = write_tiny_shards(tmp_path, shards=4, per_shard=10)
    args = parse_args(
        ["--train-data", shards, "--dataset-type", "webdataset", "--dataset-resampled",
         "--train-num-samples", str(p.train_num_samples), "--batch-size", "16", "--workers", "2"]
    )  # fmt: skip
    args.world_size = 1
    info = get_wds_dataset(args, _to_tensor, is_train=True, epoch=0, tokenizer=_tokenize)
    seen = sum(len(images) for images, _ in info.dataloader)
    assert seen == p.samples_per_epoch and p.samples_seen == p.epochs * seen
    # 200 is not a multiple of the 32-sample quantum: 192 is the nearest reachable count.
    assert p.samples_seen == 192


def test_coarse_quantum_moves_epochs_to_hit_the_target() -> None:
    # One pass over 40 samples would be 5 epochs of 32 (160, 20 % short); 6 x 32 is closer.
    p = plan_samples(200, 40, settings(batch_size=16, gpus=1, workers=2))
    assert (p.epochs, p.samples_per_epoch, p.samples_seen) == (6, 32, 192)
    # Where the target is reachable within 1 %, the epochs stay one pass per epoch.
    assert plan_samples(34_000_000_000, 407_332_084, settings()).epochs == 83


def write_tiny_shards(root: Path, shards: int, per_shard: int) -> str:
    """Webdataset tar shards of tiny JPEG + caption pairs, as img2dataset lays them out."""
    import io

    import webdataset as wds
    from PIL import Image

    for s in range(shards):
        with wds.TarWriter(str(root / f"{s:05d}.tar")) as sink:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.new("RGB", (8, 8), (i * 20 % 255, 0, s * 40 % 255)).save(buf, format="JPEG")
                sink.write({"__key__": f"{s:05d}{i:04d}", "jpg": buf.getvalue(), "txt": f"sample {i}"})
    return str(root / f"{{00000..{shards - 1:05d}}}.tar")


def _to_tensor(image):  # type: ignore[no-untyped-def]
    import torchvision.transforms.functional as F

    return F.to_tensor(image)


def _tokenize(texts):  # type: ignore[no-untyped-def]
    import torch

    return torch.zeros(len(texts), 4, dtype=torch.long)


# ---------------------------------------------------------------- cost


def test_gpu_hours_follow_six_flops_per_mac() -> None:
    gpu = GpuSpec("A100", 312, 0.5)
    # 1e9 samples x 10 GMACs x 6 = 6e19 FLOPs at 156 TFLOP/s.
    assert gpu_hours(10.0, 1_000_000_000, gpu) == pytest.approx(6e19 / 156e12 / 3600)
    assert gpu_hours(10.0, 2_000_000_000, gpu) == pytest.approx(2 * gpu_hours(10.0, 1_000_000_000, gpu))


def test_plan_totals_add_up() -> None:
    p = plan("paper")
    assert p.total_gpu_hours == pytest.approx(sum(r["gpu_hours"] for r in p.records()))
    h100 = plan("paper", ["gpu=h100"])
    assert p.total_gpu_hours / h100.total_gpu_hours == pytest.approx(989 / 312)


def test_default_utilisation_is_calibrated_on_the_papers_a100_runs(shared: Path) -> None:
    gmacs = {r["model"]: float(r["gmacs"]) for r in read_csv(shared / "arch_info.csv")}
    runs = [
        {"gmacs": gmacs[r["arch"]], "samples_per_sec": float(r["samples_per_sec"]), "gpus": int(r["gpus"])}
        for r in read_csv(shared / "trained_models_info.csv")
    ]
    assert len(runs) == 29
    median = calibrate_mfu(runs, 312)
    assert load_sweep("paper").gpu.mfu == pytest.approx(median, abs=0.005)
    assert min(measured_mfu(r["gmacs"], r["samples_per_sec"], r["gpus"], 312) for r in runs) > 0.03
