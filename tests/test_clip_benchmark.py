"""CLIP_benchmark's result files imported as metrics of runs (`scaling import DIR --format
clip_benchmark`): matched to our runs by checkpoint path and to published checkpoints by
tag, new runs added with what their tag says, idempotent, a bad file named."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_fit import cli

PROFILE = """\
model,image_size,image_width,text_width,embed_dim,mparams,image_mparams,text_mparams,gflops,image_gflops,text_gflops
ViT-B-32,224,768,512,512,151.28,87.85,63.43,14.78,8.82,5.96
ViT-L-14,224,1024,768,768,427.62,304.29,123.33,175.33,162.03,13.3
"""  # two rows of open_clip's docs/model_profile.csv


def result(
    model: str, pretrained: str, dataset: str, task: str, metrics: dict[str, object], **extra: object
) -> dict[str, object]:
    """A result as `clip_benchmark eval` dumps it (clip_benchmark/cli.py, 1.6.x)."""
    return {"dataset": dataset, "model": model, "pretrained": pretrained, "task": task, "metrics": metrics,
            "language": "en", **extra}  # fmt: skip


def write(directory: Path, results: list[dict[str, object]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(results):
        name = (
            f"{r['dataset']}_{Path(str(r['pretrained'])).name}_{r['model']}_en_{r['task']}_{i}.json".replace(
                "/", "_"
            )
        )
        (directory / name).write_text(json.dumps(r))
    return directory


def published() -> list[dict[str, object]]:
    out = []
    for model, tag, top1 in (
        ("ViT-B-32", "laion2b_s34b_b79k", 0.6656),
        ("ViT-L-14", "laion2b_s32b_b82k", 0.7531),
    ):
        out.append(result(model, tag, "wds/imagenet1k", "zeroshot_classification",
                          {"acc1": top1, "acc5": top1 + 0.2, "mean_per_class_recall": top1}))  # fmt: skip
        out.append(result(model, tag, "wds/mscoco_captions", "zeroshot_retrieval",
                          {"image_retrieval_recall@1": 0.39, "text_retrieval_recall@1": 0.56,
                           "image_retrieval_recall@5": 0.65, "text_retrieval_recall@5": 0.79}))  # fmt: skip
        out.append(result(model, tag, "cifar10", "linear_probe",
                          {"lp_acc1": 0.9, "lp_acc5": 0.99, "lp_mean_per_class_recall": 0.9,
                           "weight_decay": 0.0, "epochs": 10, "seed": 0, "fewshot_k": 10,
                           "normalized": True}))  # fmt: skip
    return out


def metrics(db: Path) -> dict[tuple[str, str, str], float]:
    with sqlite3.connect(db) as conn:
        return {
            (p, d, m): v
            for p, d, m, v in conn.execute("SELECT point_id, dataset, metric, value FROM metrics")
        }


def test_published_checkpoints_become_runs_with_their_metrics_and_a_law(tmp_path: Path) -> None:
    (tmp_path / "model_profile.csv").write_text(PROFILE)
    directory = write(tmp_path / "results", published())
    args = ["import", str(directory), "--format", "clip_benchmark", "--family", "cb",
            "--profile", str(tmp_path / "model_profile.csv")]  # fmt: skip
    out = cli(args, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "6 results of 2 runs in family cb (2 new, 0 already in the store)" in out.stdout
    got = metrics(tmp_path / "results.db")
    b32 = "ViT-B-32_laion2b_s34b_b79k"
    assert got[(b32, "imagenet1k", "acc1")] == 0.6656  # wds/ dropped
    assert got[(b32, "mscoco_captions", "mean_recall@1")] == pytest.approx((0.39 + 0.56) / 2)
    assert got[(b32, "cifar10", "lp_acc1_10shot")] == 0.9 and (b32, "cifar10", "weight_decay") not in got
    # The tag says LAION-2B and 34B samples; the profile 14.78 GFLOPs = 7.39 GMACs per sample.
    runs = cli(["runs", "family=cb", "--format", "json"], tmp_path)
    row = next(r for r in json.loads(runs.stdout) if r["id"] == b32)
    assert (row["data"], row["samples_seen"], row["compute_gmacs"]) == (
        "LAION-2B",
        34e9,
        pytest.approx(7.39 * 34e9),
    )
    law = cli(["fit", "family=cb", "dataset=imagenet1k", "metric=acc1", "--format", "json"], tmp_path)
    assert law.returncode == 0 and json.loads(law.stdout)["n_runs"] == 2, law.stderr
    # Again: nothing changes.
    before = metrics(tmp_path / "results.db")
    again = cli(args, tmp_path)
    assert again.returncode == 0 and "(0 new, 2 already in the store)" in again.stdout
    assert metrics(tmp_path / "results.db") == before


def test_results_of_our_runs_attach_to_them_by_checkpoint_path(tmp_path: Path) -> None:
    table = tmp_path / "ours.csv"
    table.write_text("model,gmacs,samples_seen,acc\ntoy-s,0.5,4000,0.1\ntoy-s,0.5,16000,0.2\n")
    columns = "model=model,gmacs=gmacs,samples_seen=samples_seen,toy_shapes/acc1=acc"
    out = cli(["import", str(table), "--family", "toy", "--columns", columns], tmp_path)
    assert out.returncode == 0, out.stderr
    with sqlite3.connect(tmp_path / "results.db") as conn:
        ours = sorted(r[0] for r in conn.execute("SELECT id FROM points"))
    checkpoint = f"/scratch/runs/{ours[0]}/checkpoints/epoch_3.pt"
    recalls = {"image_retrieval_recall@1": 0.05, "text_retrieval_recall@1": 0.07}
    directory = write(
        tmp_path / "results", [result("toy-s", checkpoint, "toy_captions", "zeroshot_retrieval", recalls)]
    )
    out = cli(["import", str(directory), "--format", "clip_benchmark", "--family", "toy"], tmp_path)
    assert out.returncode == 0 and "(0 new, 1 already in the store)" in out.stdout, out.stdout + out.stderr
    assert metrics(tmp_path / "results.db")[(ours[0], "toy_captions", "mean_recall@1")] == pytest.approx(0.06)


def test_a_run_without_a_profile_or_samples_seen_is_listed_and_left_out_of_laws(tmp_path: Path) -> None:
    directory = write(tmp_path / "results", [
        *published(),
        result("ViT-B-16", "dfn2b", "imagenet1k", "zeroshot_classification", {"acc1": 0.76}),
    ])  # fmt: skip
    out = cli(["import", str(directory), "--format", "clip_benchmark", "--family", "cb"], tmp_path)
    assert out.returncode == 0, out.stderr
    law = cli(["fit", "family=cb", "dataset=imagenet1k", "metric=acc1", "--format", "json"], tmp_path)
    assert law.returncode == 2 and "has a known compute (3 left out" in law.stderr, law.stderr
    runs = {r["id"]: r for r in json.loads(cli(["runs", "family=cb", "--format", "json"], tmp_path).stdout)}
    assert "ViT-L-14 is not profiled (give --profile" in runs["ViT-L-14_laion2b_s32b_b82k"]["no_compute"]
    assert runs["ViT-B-16_dfn2b"]["samples_seen"] is None
    assert "the tag 'dfn2b' does not say" in runs["ViT-B-16_dfn2b"]["no_compute"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"dataset": "cifar10",\n "model": ViT}', ".json:2: not JSON"),
        ('{"dataset": "cifar10", "model": "ViT-B-32"}', "not a CLIP_benchmark result (it needs dataset"),
        (json.dumps(result("ViT-B-32", "openai", "cifar10", "zeroshot_classification", {"acc1": "high"})),
         "metric acc1 is 'high', not a finite number"),
        (json.dumps(result("ViT-B-32", "", "cifar10", "zeroshot_classification", {"acc1": 0.9})),
         "dataset, model, pretrained and task must not be empty"),
    ],
)  # fmt: skip
def test_a_bad_result_file_is_named_and_nothing_is_written(
    tmp_path: Path, content: str, message: str
) -> None:
    directory = write(tmp_path / "results", published())
    (directory / "zz_bad.json").write_text(content)
    out = cli(["import", str(directory), "--format", "clip_benchmark", "--family", "cb"], tmp_path)
    assert out.returncode == 2 and message in out.stderr and "zz_bad.json" in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "results.db").exists()


def test_an_empty_or_missing_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for target, message in (
        (tmp_path / "empty", "holds no CLIP_benchmark result"),
        (tmp_path / "nope", "not a directory"),
    ):
        out = cli(["import", str(target), "--format", "clip_benchmark", "--family", "cb"], tmp_path)
        assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not (tmp_path / "results.db").exists()
