"""Model types as an axis: CLIP, SigLIP and CoCa planned, trained for real on CPU with open_clip's
own losses, stored with their type, and compared law against law in the report.

At this toy scale (toy-xs, at most 2k samples) all three stay at chance: CLIP's loss ends at
ln 64 and SigLIP's at 64·H(1/64) = 5.14 per sample, the losses of embeddings that have not yet
told the samples of a batch of 64 apart (toy-xs stays near chance at 64k samples too, and
toy-s leaves it by 10k). SigLIP on toy-s was still at chance after 12k samples at lr 2e-3 or
1e-2, and CoCa trains at ~1/15 of CLIP's speed (55 vs 850 samples/s on toy-xs), its compute
mostly its decoder's projection onto the vocabulary. So the test checks the machinery (each
type's loss and parameters, the compute with CoCa's decoder, the evaluation rebuilding each
model, one law per type and their comparison), not which type scales better."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import trained_sweep
from test_fit import cli

from scaling.errors import ClipscaleError
from scaling.plan import plan
from scaling.store import connect

TYPES_SWEEP = """\
defaults:
  - gpu: cpu
  - cluster: local
  - _self_
name: types
data_root: {root}
runs_root: {runs}
eval:
  root: {root}/toy/eval
  sets:
    - {{name: toy_shapes, task: zeroshot_classification}}
model: [toy-xs]
data: [toy-16k]
samples_seen: [1k, 1.5k, 2k]
model_type: [clip, siglip, coca]
clusters:
  local: {{parallelism: 2}}
train: {{lr: 2.0e-3, warmup: 10, batch_size: 64, gpus: 1, workers: 1, precision: fp32, seed: 0}}
"""


def test_a_clip_points_id_is_what_it_was_before_model_types() -> None:
    # The axis adds nothing to a CLIP point's id; SigLIP and CoCa points are points of their own.
    before = {p.point.id for p in plan("toy").points}
    typed = plan("toy", ["model_type=[clip,siglip,coca]"]).points
    assert before == {p.point.id for p in typed if p.point.train.model_type == "clip"}
    assert len(typed) == 3 * len(before) and len({p.point.id for p in typed}) == len(typed)
    assert "toy-s_toy-4k_4k_1686797113b1" in before  # as planned before model types existed


def test_coca_trains_its_models_coca_form_and_counts_its_decoder() -> None:
    points = {p.point.train.model_type: p for p in plan("toy", ["model=[toy-s]", "data=[toy-4k]",
              "samples_seen=[4k]", "model_type=[clip,siglip,coca]"]).points}  # fmt: skip
    clip, siglip, coca = points["clip"], points["siglip"], points["coca"]
    assert coca.point.model == "coca_toy-s" and "multimodal_cfg" in (coca.point.model_config or {})
    assert siglip.point.model == "toy-s" and siglip.macs == clip.macs and clip.macs.decoder == 0
    # The decoder, with its projection onto CLIP's 49,408-token vocabulary, dwarfs the towers.
    assert coca.macs.decoder > 5 * clip.macs.total
    assert coca.macs.total == pytest.approx(coca.macs.image + coca.macs.text + coca.macs.decoder)


def test_the_plan_table_names_each_points_type() -> None:
    from rich.console import Console

    from scaling.tables import print_plan

    console = Console(record=True, width=300)
    print_plan(plan("toy", ["model=[toy-s]", "data=[toy-4k]", "samples_seen=[4k]",
                            "model_type=[clip,siglip,coca]"]), console)  # fmt: skip
    rows = [line for line in console.export_text().splitlines() if "toy-4k" in line]
    assert [row.split("│")[3].strip() for row in rows] == ["clip", "siglip", "coca"]
    untyped = Console(record=True, width=300)
    print_plan(plan("toy", ["model=[toy-s]", "data=[toy-4k]"]), untyped)
    assert " type " not in untyped.export_text()


def test_trainer_arguments_of_each_type() -> None:
    from scaling.trainargs import open_clip_argv

    overrides = ["model=[toy-s]", "data=[toy-4k]", "samples_seen=[4k]", "model_type=[clip,siglip,coca]",
                 "+train.coca_caption_loss_weight=1.5"]  # fmt: skip
    points = {p.point.train.model_type: p.point for p in plan("toy", overrides).points}
    argv = {t: open_clip_argv(p, Path("/runs"), "cpu") for t, p in points.items()}
    assert "--siglip" in argv["siglip"] and "--siglip" not in argv["clip"] + argv["coca"]
    coca = argv["coca"]
    assert coca[coca.index("--model") + 1] == "coca_toy-s"
    assert coca[coca.index("--coca-caption-loss-weight") + 1] == "1.5"
    assert coca[coca.index("--coca-contrastive-loss-weight") + 1] == "1.0"
    assert not any(a.startswith("--coca") for a in argv["clip"] + argv["siglip"])


def test_bad_model_types_are_one_line() -> None:
    with pytest.raises(ClipscaleError, match="unknown model_type 'mammut' \\(valid: clip, siglip, coca\\)"):
        plan("toy", ["model_type=[clip,mammut]"])
    with pytest.raises(ClipscaleError, match=r"model coca_ViT-B-32 trains CoCa .* not model_type siglip"):
        plan("toy", ["model=[coca_ViT-B-32]", "model_type=[siglip]"])
    with pytest.raises(ClipscaleError, match="finetune: model_type is the first stage's"):
        plan("clipa", ["+finetune.model_type=coca"])


@pytest.fixture(scope="module")
def typed_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_sweep(tmp_path_factory.mktemp("types"), "types", TYPES_SWEEP, 9)


@pytest.mark.torch
def test_each_type_trains_with_its_loss_and_is_stored_with_its_type(typed_grid: Path) -> None:
    import torch

    engine = connect(f"sqlite:///{typed_grid / 'results.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, model, model_type, gmacs_per_sample FROM points")).all()
    assert sorted((r.model, r.model_type) for r in rows) == sorted(
        [("toy-xs", "clip")] * 3 + [("toy-xs", "siglip")] * 3 + [("coca_toy-xs", "coca")] * 3
    )
    for r in rows:
        state = torch.load(typed_grid / "runs" / r.id / "checkpoints" / "epoch_latest.pt", map_location="cpu",
                           weights_only=False)["state_dict"]  # fmt: skip
        # SigLIP learns a logit bias; CoCa has a text decoder; CLIP neither.
        assert ("logit_bias" in state) == (r.model_type == "siglip"), r.id
        if r.model_type == "siglip":  # learnt from open_clip's initial -10
            assert float(state["logit_bias"]) > -10 + 1e-3, r.id
        assert any(k.startswith("text_decoder.") for k in state) == (r.model_type == "coca"), r.id
        loss = json.loads((typed_grid / "runs" / r.id / "outcome.json").read_text())["loss"]
        assert loss["last"] < loss["first"], (r.id, loss)  # each loss went down


@pytest.mark.torch
def test_the_report_compares_the_laws_of_the_three_types(typed_grid: Path) -> None:
    out = typed_grid / "report"
    done = cli(["report", "sweep=types", f"out={out}", "metrics=[toy_shapes/acc1]", "group=model_type",
                "frontier=all"], typed_grid)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (out / "report.md").read_text()
    for t in ("clip", "siglip", "coca"):
        assert f"| {t} |" in text, t
    args = ["sweep=types", "dataset=toy_shapes", "metric=acc1", "group=model_type", "frontier=all"]
    fitted = cli(["fit", *args, "--format", "json"], typed_grid)
    assert fitted.returncode == 0, fitted.stderr
    laws = json.loads(fitted.stdout)
    assert [law["model_type"] for law in laws] == ["clip", "siglip", "coca"]
    assert all(law["n_runs"] == 3 for law in laws)
    # CoCa's runs cost about ten times CLIP's at the same samples seen: its law sits further right.
    low = {law["model_type"]: min(r["run_compute"] for r in law["frontier"]) for law in laws}
    assert low["coca"] > 5 * low["clip"] and low["siglip"] == pytest.approx(low["clip"])
