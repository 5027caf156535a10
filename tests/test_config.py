"""Composition of sweeps with Hydra, the catalogue, and rejection of bad configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MINI_SWEEP

from scaling.config import TrainSettings, load_sweep, open_clip_builtin_models
from scaling.errors import ClipscaleError


def test_paper_sweep_composes_with_its_defaults() -> None:
    spec = load_sweep("paper")
    axes = dict(spec.axes)
    assert axes["model"] == ("ViT-B-32", "ViT-B-16", "ViT-L-14")
    assert axes["data"] == ("LAION-80M", "LAION-400M", "LAION-2B")
    assert axes["samples_seen"] == (3_000_000_000, 13_000_000_000, 34_000_000_000)
    assert spec.gpu.name == "A100" and spec.gpu.peak_tflops == 312
    assert spec.cluster.kind == "slurm"
    assert len(spec.rules) == 30
    assert spec.datasets["LAION-400M"].num_samples == 407_332_084
    assert set(spec.models) == {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-g-14"}


def test_overrides_in_hydra_syntax_reach_every_level() -> None:
    spec = load_sweep(
        "paper", ["gpu=h100", "model=ViT-B-32", "samples_seen=[1B,2e9]", "train.lr=5e-4", "gpu.mfu=0.4"]
    )
    assert dict(spec.axes)["model"] == ("ViT-B-32",)
    assert dict(spec.axes)["samples_seen"] == (1_000_000_000, 2_000_000_000)
    assert spec.train.lr == 5e-4
    assert spec.gpu.name == "H100" and spec.gpu.mfu == 0.4


def test_catalogue_models_carry_their_open_clip_config() -> None:
    spec = load_sweep("toy")
    toy = spec.models["toy-m"]
    assert toy.open_clip_config is not None
    assert toy.open_clip_config["vision_cfg"]["width"] == 64
    assert load_sweep("paper").models["ViT-B-32"].open_clip_config is None


def test_open_clip_builtin_names_are_read_without_importing_it() -> None:
    names = open_clip_builtin_models()
    assert {"ViT-B-32", "ViT-L-14", "ViT-bigG-14", "ViT-L-14-CLIPA"} <= names


def test_user_sweep_file_and_config_dir(tmp_path: Path, write_sweep: Callable[[str, str], Path]) -> None:
    path = write_sweep("mini", MINI_SWEEP)
    assert load_sweep(str(path)).name == "mini"
    # The same file found by name through an extra config dir, which also adds a gpu.
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "b200.yaml").write_text("name: B200\npeak_tflops: 2250\nmfu: 0.3\n")
    spec = load_sweep("mini", ["gpu=b200"], config_dir=[tmp_path])
    assert spec.gpu.name == "B200"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=ViT-Z-99"], r"unknown model 'ViT-Z-99' \(valid: .*ViT-B-32.*built-in models\)"),
        (["data=LAION-5B"], r"unknown data 'LAION-5B' \(valid: LAION-2B, LAION-400M, LAION-80M"),
        (["gpu=b200"], r"unknown gpu 'b200' \(valid: a100, cpu, h100, h200\)"),
        (["cluster=k8s"], r"unknown cluster 'k8s' \(valid: local, slurm\)"),
        (["samples_seen=-5"], r"samples_seen must be positive, got -5"),
        (["samples_seen=0"], r"samples_seen must be positive, got 0"),
        (["samples_seen=lots"], r"samples_seen must be a count"),
        (["model=[a,"], r"malformed override"),
        (["nonsense"], r"malformed override|Could not"),
        (["foo=1"], r"Could not override 'foo'"),
        (["+foo=1"], r"unknown key 'foo'"),
        (["train.lr=abc"], r"lr must be a number, got 'abc'"),
        (["train.lr=-1"], r"lr must lie in"),
        (["train.batch_size=0"], r"batch_size must be at least 1"),
        (["train.precision=fp8"], r"unknown precision 'fp8' \(valid: amp,"),
        (["+train.bogus=1"], r"unknown key 'bogus'"),
        (["gpu.mfu=0"], r"gpu.mfu must lie in"),
        (["model=[]"], r"axis model needs at least one value"),
        (["include=[{model: ViT-Q}]"], r"unknown model 'ViT-Q'"),
        (["exclude=[{colour: red}]"], r"exclude: unknown key 'colour'"),
    ],
)
def test_bad_input_names_the_problem(overrides: list[str], message: str) -> None:
    with pytest.raises(ClipscaleError, match=message) as info:
        load_sweep("paper", overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{name: toy_shapes, task: zeroshot_classification, shots: [1]}",
            "shots and seeds are for task linear_probe",
        ),
        ("{name: toy_shapes, task: linear_probe, shots: [10, 1, 10]}", r"shots \[10, 1, 10\] repeat a k"),
        ("{name: toy_shapes, task: linear_probe, shots: [0]}", "shots must be at least 1"),
        ("{name: toy_shapes, task: linear_probe, shots: [5], seeds: 0}", "seeds must be at least 1"),
        ("{name: toy_shapes, task: linear_probe, epochs: 2, lr: 0.1}", "epochs, lr are for task finetune"),
        ("{name: toy_shapes, task: finetune, lr: 2}", r"lr must lie in \(0.0, 1.0\)"),
        ("{name: toy_shapes, task: finetune, epochs: 0}", "epochs must be at least 1"),
    ],
)
def test_bad_probes_and_fine_tunings_name_the_problem(entry: str, message: str) -> None:
    with pytest.raises(ClipscaleError, match=message) as info:
        load_sweep("toy", [f"eval.sets=[{entry}]"])
    assert "\n" not in str(info.value) and "toy_shapes" in str(info.value)


def test_a_few_shot_probe_reads_its_shots_and_seeds() -> None:
    sets = "[{name: toy_shapes, task: linear_probe, shots: [10, 1], seeds: 5}, " \
           "{name: toy_shapes_shifted, task: zeroshot_classification}]"  # fmt: skip
    probe, shifted = load_sweep("toy", [f"eval.sets={sets}"]).eval.sets
    assert (probe.task, probe.shots, probe.seeds) == ("linear_probe", (1, 10), 5)
    assert (shifted.shots, shifted.seeds) == ((), 3)


def test_unknown_sweep_lists_the_valid_ones() -> None:
    with pytest.raises(ClipscaleError, match=r"unknown sweep 'nope' \(valid: clipa, paper, toy\)"):
        load_sweep("nope")


def test_malformed_yaml_is_one_line(write_sweep: Callable[[str, str], Path]) -> None:
    path = write_sweep("broken", "model: [toy-s\ndata: toy-4k\n")
    with pytest.raises(ClipscaleError, match="broken") as info:
        load_sweep(str(path))
    assert "\n" not in str(info.value)


def test_malformed_catalogue_entry_is_one_line(
    tmp_path: Path, write_sweep: Callable[[str, str], Path]
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "toy-s.yaml").write_text("open_clip_config: {embed_dim: [\n")
    path = write_sweep("mini", MINI_SWEEP)
    with pytest.raises(ClipscaleError, match=r"malformed YAML in .*toy-s.yaml") as info:
        load_sweep(str(path), config_dir=[tmp_path])
    assert "\n" not in str(info.value)


def test_missing_config_dir_is_reported() -> None:
    with pytest.raises(ClipscaleError, match=r"config directory .* does not exist"):
        load_sweep("toy", config_dir=["/nonexistent/clipscale-conf"])


def test_global_batch_counts_every_process_and_accumulation() -> None:
    t = TrainSettings(lr=1e-3, warmup=0, batch_size=96, gpus=824, accum_freq=2)
    assert t.global_batch_size == 96 * 824 * 2
