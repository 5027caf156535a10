"""Grid expansion, per-point rules, linked CLIPA stages and stable ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MINI_SWEEP

from scaling.config import load_sweep
from scaling.errors import ClipscaleError
from scaling.grid import expand
from scaling.plan import plan


def coords(sweep: str, overrides: list[str] | None = None) -> list[tuple[str, str, int]]:
    return [(c.model, c.data, c.samples_seen) for c in expand(load_sweep(sweep, overrides or []))]


def test_paper_grid_is_27_plus_the_two_large_models() -> None:
    points = coords("paper")
    assert len(points) == 29 == len(set(points))
    assert ("ViT-H-14", "LAION-2B", 34_000_000_000) in points
    assert ("ViT-g-14", "LAION-2B", 13_000_000_000) in points
    assert sum(1 for m, _, _ in points if m in ("ViT-H-14", "ViT-g-14")) == 2


def test_every_paper_point_gets_its_own_settings() -> None:
    by_key = {(c.model, c.data, c.samples_seen): c.train for c in expand(load_sweep("paper"))}
    b32 = by_key[("ViT-B-32", "LAION-2B", 34_000_000_000)]
    assert (b32.lr, b32.warmup, b32.batch_size, b32.gpus, b32.epochs) == (1e-3, 2000, 96, 824, 256)
    assert b32.train_num_samples == 135_646_078
    g14 = by_key[("ViT-g-14", "LAION-2B", 13_000_000_000)]
    assert (g14.lr, g14.batch_size * g14.gpus, g14.epochs) == (5e-4, 64_000, 90)


def test_exclude_removes_matching_points_and_include_adds_back(
    write_sweep: Callable[[str, str], Path],
) -> None:
    path = write_sweep(
        "mini",
        MINI_SWEEP
        + "exclude:\n  - {model: toy-m}\ninclude:\n  - {model: toy-m, samples_seen: 16k}\n"
        + "  - {model: toy-xs, data: [toy-4k, toy-16k]}\n",
    )
    points = coords(str(path))
    assert ("toy-m", "toy-4k", 4000) not in points
    assert ("toy-m", "toy-4k", 16000) in points
    # An include entry without samples_seen takes every value of that axis.
    assert {p for p in points if p[0] == "toy-xs"} == {
        ("toy-xs", d, s) for d in ("toy-4k", "toy-16k") for s in (4000, 16000)
    }
    assert len(points) == 2 + 1 + 4


def test_rules_apply_in_order_and_axis_values_win(write_sweep: Callable[[str, str], Path]) -> None:
    path = write_sweep(
        "mini",
        MINI_SWEEP
        + "points:\n"
        + "  - match: {model: toy-m}\n    train: {lr: 2.0e-3, batch_size: 16}\n"
        + "  - match: {model: toy-m, samples_seen: 16k}\n    train: {lr: 3.0e-3}\n"
        + "  - match: {batch_size: 16}\n    train: {warmup: 7}\n",
    )
    cands = {(c.model, c.samples_seen): c.train for c in expand(load_sweep(str(path)))}
    assert cands[("toy-s", 4000)].lr == 1e-3
    assert cands[("toy-m", 4000)].lr == 2e-3
    assert cands[("toy-m", 16000)].lr == 3e-3
    # A rule can match a setting an earlier rule gave.
    assert cands[("toy-m", 4000)].warmup == 7 and cands[("toy-s", 4000)].warmup == 5
    # A training setting used as an axis beats the rules.
    axis = {(c.model, c.train.lr) for c in expand(load_sweep(str(path), ["+lr=[1e-4,1e-2]"]))}
    assert axis == {(m, lr) for m in ("toy-s", "toy-m") for lr in (1e-4, 1e-2)}


def test_clipa_points_are_linked_pretrain_then_finetune() -> None:
    cands = expand(load_sweep("clipa"))
    # 2 models x 3 image sizes x 2 text lengths x 2 patch dropouts, minus 8 excluded; x 2 stages.
    assert len(cands) == 32
    for i in range(0, len(cands), 2):
        first, second = cands[i], cands[i + 1]
        assert first.stage == 1 and second.stage == 2 and second.parent == i
        assert first.train.image_size in (64, 112, 160) and first.train.context_length in (8, 16)
        assert (second.train.image_size, second.train.context_length) == (224, 32)
        assert second.samples_seen == 131_072_000 and second.train.lr == 2.56e-5
    assert not any(c.train.patch_dropout == 0.5 and c.train.image_size != 160 for c in cands)


def test_empty_grid_after_exclusions_is_an_error() -> None:
    with pytest.raises(ClipscaleError, match=r"grid is empty after exclusions \(12 of 12"):
        expand(load_sweep("toy", ["exclude=[{data: [toy-4k, toy-64k]}]"]))


def test_ids_are_stable_unique_and_follow_the_config() -> None:
    first = plan("paper").records()
    again = plan("paper", ["gpu=h100", "gpu.mfu=0.5"]).records()
    ids = [r["id"] for r in first]
    assert len(set(ids)) == 29
    # Cost assumptions do not change what a run is; training settings do.
    assert ids == [r["id"] for r in again]
    changed = plan("paper", ["train.seed=1"]).records()
    assert not set(ids) & {r["id"] for r in changed}
    one_lr = {r["id"] for r in plan("paper", ["points.1.train.lr=1e-4"]).records()}
    assert len(set(ids) - one_lr) == 1
    # How a run executes (compilation, the loss's memory, the collective timeout) is not what
    # it learns: the same ids.
    executed = ["train.torchcompile=false", "train.local_loss=false", "train.dist_timeout_min=3"]
    assert ids == [r["id"] for r in plan("paper", executed).records()]


def test_data_root_is_not_part_of_the_id() -> None:
    a = plan("toy", ["data_root=/a"]).records()[0]
    b = plan("toy", ["data_root=/b"]).records()[0]
    assert a["id"] == b["id"] and a["shards"] != b["shards"]
    assert b["shards"].startswith("/b/toy/toy-4k/")


def test_same_config_same_id_in_another_process() -> None:
    # A fresh interpreter with another hash seed and working directory: ids must not
    # depend on either (they name run directories and result rows on every node).
    code = (
        "import json; from scaling.plan import plan;"
        "print(json.dumps([r['id'] for r in plan('paper').records()]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [r["id"] for r in plan("paper").records()]


def test_id_scheme_is_pinned() -> None:
    # Changing how ids are made would orphan every recorded run: do it on purpose only.
    record = next(
        r
        for r in plan("paper").records()
        if (r["model"], r["data"], r["epochs"]) == ("ViT-B-32", "LAION-400M", 32)
    )
    assert record["id"] == "ViT-B-32_LAION-400M_13B_" + record["id"].rsplit("_", 1)[1]
    assert record["id"] == PINNED_ID


# The paper sweep's execution flags left extra_args (part of the id) for id-neutral settings.
PINNED_ID = "ViT-B-32_LAION-400M_13B_84daedf1dcb5"
