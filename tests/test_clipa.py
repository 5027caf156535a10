"""CLIPA's inverse-scaling view: tokens per point, CLIPA's published tables imported, and a toy
CLIPA sweep (two models pre-trained at 16 and 32 px, each fine-tuned at 32 px) trained for real
on CPU, stored with each fine-tune's compute summed with its pre-training's, and reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import REPO, trained_sweep
from test_fit import cli as _cli

from scaling.store import connect
from scaling.tokens import image_tokens, reduced, text_tokens


def cli(cwd: Path, *args: str) -> Any:
    return _cli(list(args), cwd)


CLIPA_TABLES = REPO.parent / "shared" / "external-data" / "clipa" / "clipa_readme_tables.csv"


def test_tokens_are_kept_patches_plus_the_class_token() -> None:
    # CLIPA-v1 names 112 px in 16 px patches I50: 7×7 + 1. Patch dropout keeps a share.
    b16 = {"model": "ViT-B-16", "train": {"image_size": 112}}
    assert image_tokens(b16) == 50 and text_tokens(b16) == 77
    assert image_tokens({"model": "ViT-B-16", "train": {"image_size": 160, "patch_dropout": 0.5}}) == 51
    model = {"vision_cfg": {"image_size": 32, "patch_size": 4}, "text_cfg": {"context_length": 16}}
    toy = {"model_config": model, "train": {"context_length": 8}}
    assert (image_tokens(toy), text_tokens(toy)) == (65, 8)
    assert reduced(toy) and reduced({"stage": 2, "train": {}}) and not reduced({"train": {"lr": 1e-3}})


@pytest.fixture
def published(tmp_path: Path) -> Path:
    if not CLIPA_TABLES.is_file():
        pytest.skip("../shared CLIPA tables are not present")
    return CLIPA_TABLES


def test_clipas_tables_import_once_with_their_tokens(published: Path, tmp_path: Path) -> None:
    from scaling.store.query import configs, fetch, parse_filters

    first = cli(tmp_path, "import", str(published), "--format", "clipa", "--family", "clipa-published")
    assert first.returncode == 0, first.stdout
    # 31 rows; nine print a checkpoint a second source prints too.
    assert first.stdout.startswith("22 runs in family clipa-published")
    again = cli(tmp_path, "import", str(published), "--format", "clipa", "--family", "clipa-published")
    assert again.stdout == first.stdout
    engine = connect(f"sqlite:///{tmp_path / 'results.db'}")
    rows, metrics = fetch(engine, parse_filters(["family=clipa-published"]))
    found = configs(engine, [r["id"] for r in rows])
    by = {(r["model"], found[r["id"]]["image_tokens"], found[r["id"]]["stage"]): r for r in rows}
    top1 = {pid: v for pid, d, m, v in metrics if (d, m) == ("imagenet1k", "acc1")}
    # CLIPA-v1 L/16 at I17, T16: 60.3 pre-trained, 67.8 fine-tuned; v2 H/14 at 84 px: 36 + 1 tokens.
    assert top1[by[("CLIPA-v1 L/16", 17, 1)]["id"]] == pytest.approx(0.603)
    assert top1[by[("CLIPA-v1 L/16", 17, 2)]["id"]] == pytest.approx(0.678)
    assert ("CLIPA-v2 H/14", 37, 1) in by and ("CLIPA-v2 H/14", 26, 1) in by
    assert all(r["samples_seen"] is None and r["no_compute"] for r in rows)


def test_a_bad_clipa_row_is_named_by_its_line(published: Path, tmp_path: Path) -> None:
    lines = published.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], lines[2].replace(",67.8", ",678")]) + "\n")
    out = cli(tmp_path, "import", str(bad), "--format", "clipa", "--family", "x")
    assert out.returncode != 0 and "bad.csv:3: zeroshot_in1k_top1 is 678, outside [0, 100]" in out.stderr
    assert not (tmp_path / "results.db").exists()


# Two toy models pre-trained at 16 and 32 px (17 and 65 image tokens) and 8 text tokens, then
# fine-tuned at 32 px with all 16 text tokens: CLIPA's two stages, eight runs in all.
TOY_CLIPA = """\
defaults:
  - gpu: cpu
  - cluster: local
  - _self_
name: clipa
data_root: {root}
runs_root: {runs}
eval:
  root: {root}/toy/eval
  sets:
    - {{name: toy_shapes, task: zeroshot_classification}}
model: [toy-xs, toy-s]
data: [toy-16k]
samples_seen: [4k]
image_size: [16, 32]
context_length: [8]
clusters:
  local: {{parallelism: 2}}
train: {{lr: 2.0e-3, warmup: 10, batch_size: 64, gpus: 1, workers: 1, precision: fp32, seed: 0}}
finetune: {{samples_seen: 1k, image_size: 32, context_length: 16, lr: 5.0e-4, warmup: 2}}
"""


@pytest.fixture(scope="module")
def toy_clipa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_sweep(tmp_path_factory.mktemp("clipa"), "clipa", TOY_CLIPA, 8)


@pytest.mark.torch
def test_a_fine_tune_costs_its_own_compute_plus_its_pre_trainings(toy_clipa: Path) -> None:
    engine = connect(f"sqlite:///{toy_clipa / 'results.db'}")
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.text("SELECT * FROM points"))}
    tuned = [r for r in rows.values() if json.loads(r.config)["stage"] == 2]
    assert len(tuned) == 4
    for r in tuned:
        parent = rows[json.loads(r.config)["parent"]]
        assert r.compute_gmacs == pytest.approx(r.gmacs_per_sample * r.samples_seen + parent.compute_gmacs)
        assert parent.compute_gmacs == pytest.approx(parent.gmacs_per_sample * parent.samples_seen)
        assert parent.gmacs_per_sample <= r.gmacs_per_sample  # pre-trained at no more tokens


@pytest.mark.torch
def test_report_of_a_toy_clipa_sweep_draws_the_inverse_scaling_view(toy_clipa: Path) -> None:
    out = toy_clipa / "report"
    done = cli(toy_clipa, "report", "sweep=clipa", f"out={out}", "metrics=[toy_shapes/acc1]", "group=all")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "toy_shapes__acc1__tokens.png").stat().st_size > 10_000
    text = (out / "report.md").read_text()
    assert "## Inverse scaling: toy_shapes/acc1 against tokens" in text
    view = text.split("## Inverse scaling")[1].split("\n## ")[0]
    table = [line.split("|")[1:-1] for line in view.splitlines() if line.startswith("| toy-")]
    cells = {(c[0].strip(), int(c[1]), int(c[2])): c for c in table}
    # Each model at 17 and 65 image tokens, 8 text tokens, before and after its fine-tune.
    assert set(cells) == {(m, n, 8) for m in ("toy-xs", "toy-s") for n in (17, 65)}
    for c in cells.values():
        assert 0 < float(c[3]) <= 1 and 0 < float(c[4]) <= 1 and float(c[5]) > 0
    # The smaller images cost less compute per model, fine-tune included.
    for m in ("toy-xs", "toy-s"):
        assert float(cells[(m, 17, 8)][5]) < float(cells[(m, 65, 8)][5])


@pytest.mark.torch
def test_an_overlay_without_the_views_metric_is_one_line(toy_clipa: Path, published: Path) -> None:
    assert (
        cli(
            toy_clipa, "import", str(published), "--format", "clipa", "--family", "clipa-published"
        ).returncode
        == 0
    )
    out = cli(toy_clipa, "report", "sweep=clipa", f"out={toy_clipa / 'r2'}", "metrics=[toy_shapes/acc1]",
              "group=all", "overlay=clipa-published")  # fmt: skip
    assert out.returncode != 0
    assert "overlay=clipa-published: nothing to draw beside: it has no run of toy_shapes/acc1" in out.stderr
    assert not (toy_clipa / "r2").exists()


def test_the_view_draws_clipas_published_points_beside(published: Path, tmp_path: Path) -> None:
    # The published runs are a CLIPA family themselves: their view draws them, compute unknown.
    from scaling import clipa
    from scaling.report import render_view

    cli(tmp_path, "import", str(published), "--format", "clipa", "--family", "clipa-published")
    engine = connect(f"sqlite:///{tmp_path / 'results.db'}")
    v = clipa.view(engine, ["family=clipa-published"], "imagenet1k", "acc1", overlay="clipa-published")
    assert v is not None and len(v.runs) == 22 and len(v.published) == 22
    png, svg = render_view(v)
    assert png.startswith(b"\x89PNG") and b"clipa-published fine-tuned (published)" in svg
    text = "\n".join(clipa.markdown(v, "x.png"))
    assert "| CLIPA-v1 L/16 | 17 | 16 | 0.6030 | 0.6780 |" in text
