"""The evaluations beyond zero-shot on the shared toy grid (conftest.toy_grid: toy-s trained
for real at 10k–20k samples): k-shot linear probes, fine-tuning, and the report's laws of
each beside zero-shot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_fit import cli

pytestmark = pytest.mark.torch

CHANCE = 1 / 36  # toy_shapes: six colours × six shapes


def outcomes(grid: Path) -> list[tuple[str, dict[str, dict[str, float]]]]:
    found = sorted((grid / "runs").glob("*/outcome.json"))
    assert len(found) >= 3
    return [(f.parent.name, json.loads(f.read_text())["metrics"]) for f in found]


def test_k_shot_probes_are_above_chance_and_rise_with_k(toy_grid: Path) -> None:
    """On each trained point, each k averaged over three draws of its k images per class. (Ten
    images of each class already probe about as well as all ~42: 0.209 and 0.209 at 14k in one
    run, so the full probe is only checked to beat one shot.)"""
    for run, metrics in outcomes(toy_grid):
        shapes = metrics["toy_shapes"]
        one, ten, full = shapes["probe_acc1_1shot"], shapes["probe_acc1_10shot"], shapes["probe_acc1"]
        assert CHANCE < one < ten and one < full, (run, one, ten, full)
        assert shapes["probe_acc1_1shot_std"] > 0


def test_fine_tuning_scores_the_set_and_its_shift(toy_grid: Path) -> None:
    for run, metrics in outcomes(toy_grid):
        tuned, shifted = metrics["toy_shapes"], metrics["toy_shapes_shifted"]
        assert tuned["finetune_samples"] == 1920  # one pass over the train split
        assert CHANCE < tuned["finetune_acc1"] <= tuned["finetune_acc5"] <= 1, run
        assert 0 < shifted["finetune_acc1"] < tuned["finetune_acc1"], run  # the shift costs accuracy


def test_the_head_starts_as_the_zero_shot_classifier_and_the_model_is_left_untouched(toy_grid: Path) -> None:
    """Untuned, the fine-tuning classifier is the zero-shot classifier: the same top-1. And
    fine-tuning first leaves the checkpoint's zero-shot evaluation after it unchanged."""
    import open_clip

    from scaling import finetune
    from scaling.config import EvalSet, EvalSpec
    from scaling.evaluate import _loader, evaluate
    from scaling.plan import plan
    from scaling.registry import register_models

    sweep = plan(str(toy_grid / "next.yaml")).sweep
    register_models([sweep.models["toy-s"]])
    run, metrics = outcomes(toy_grid)[0]
    checkpoint = toy_grid / "runs" / run / "checkpoints" / "epoch_latest.pt"
    zero_shot = metrics["toy_shapes"]["acc1"]

    model, _, preprocess = open_clip.create_model_and_transforms("toy-s", pretrained=str(checkpoint))
    model.eval()
    shapes = next(s for s in sweep.eval.sets if s.task == "zeroshot_classification")
    dataset, test = _loader(shapes, "test", preprocess, 256)
    head = finetune._zero_shot_head(
        model, open_clip.get_tokenizer("toy-s"), dataset.classes, dataset.templates, "cpu"
    )
    untuned = finetune._accuracy(finetune._classifier(model.visual, head).eval(), test, "cpu", (1,))
    assert untuned["finetune_acc1"] == pytest.approx(zero_shot, abs=1.5 / 960)

    tune = next(s for s in sweep.eval.sets if s.task == "finetune")
    spec = EvalSpec(
        sets=(tune, EvalSet("toy_shapes", "zeroshot_classification", shapes.path)), batch_size=256
    )
    after = evaluate("toy-s", checkpoint, spec, "cpu")
    assert after["toy_shapes"]["acc1"] == pytest.approx(zero_shot, abs=1e-9)


def test_the_report_fits_few_shot_and_fine_tuned_laws_beside_zero_shot(
    toy_grid: Path, tmp_path: Path
) -> None:
    law = ["sweep=next", "frontier=all", "boot=200", "noise=0.01"]
    out = cli(["report", *law, f"out={tmp_path / 'report'}"], toy_grid)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "a bootstrap with seed noise σ = 0.01 in log10 error added to every run" in text
    shapes = ("acc1", "probe_acc1", "probe_acc1_1shot", "probe_acc1_10shot", "finetune_acc1")
    for metric in (*(f"toy_shapes / {m}" for m in shapes), "toy_shapes_shifted / finetune_acc1"):
        assert f"## {metric}" in text, (
            metric,
            [line for line in text.splitlines() if line.startswith("## ")],
        )
