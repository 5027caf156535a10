"""The generated world: deterministic, nested, in img2dataset's and CLIP_benchmark's layouts."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaling import toyworld
from scaling.cli import main


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = toyworld.write_training_set(tmp_path / "a", 1500, seed=7)
    b = toyworld.write_training_set(tmp_path / "b", 1500, seed=7)
    c = toyworld.write_training_set(tmp_path / "c", 1500, seed=8)
    assert files(a) == files(b)
    assert files(a)["00000.tar"] != files(c)["00000.tar"]
    ea = toyworld.write_eval_sets(tmp_path / "ea", seed=7, test=100, train=200)
    eb = toyworld.write_eval_sets(tmp_path / "eb", seed=7, test=100, train=200)
    assert files(ea) == files(eb)


def test_smaller_sets_are_prefixes_of_larger_ones(tmp_path: Path) -> None:
    small = toyworld.write_training_set(tmp_path / "small", 1000)
    large = toyworld.write_training_set(tmp_path / "large", 2500)
    assert (small / "00000.tar").read_bytes() == (large / "00000.tar").read_bytes()
    assert json.loads((large / "sizes.json").read_text()) == {
        "00000.tar": 1000,
        "00001.tar": 1000,
        "00002.tar": 500,
    }


def test_training_shards_follow_img2dataset(tmp_path: Path) -> None:
    root = toyworld.write_training_set(tmp_path, 1200)
    with tarfile.open(root / "00001.tar") as tar:
        names = tar.getnames()
        assert names[:3] == ["000001000.jpg", "000001000.txt", "000001000.json"]
        assert len(names) == 3 * 200
        caption = tar.extractfile("000001000.txt").read().decode()  # type: ignore[union-attr]
        meta = json.loads(tar.extractfile("000001000.json").read())  # type: ignore[union-attr]
    assert meta["caption"] == caption and meta["key"] == "000001000" and meta["status"] == "success"
    assert meta["colour"] in caption and meta["shape"] in caption


def test_captions_vary_and_name_colour_and_shape() -> None:
    samples = [toyworld._sample(0, toyworld.STREAM_TRAIN, i, 32) for i in range(300)]
    assert len({s.caption for s in samples}) > 200
    assert len({s.label for s in samples}) == len(toyworld.CLASSES) == 48
    for s in samples:
        colour, shape = toyworld.CLASSES[s.label].split()
        assert colour in s.caption and shape in s.caption
        assert " a orange" not in s.caption and not s.caption.startswith("a orange")


@pytest.mark.torch
def test_eval_sets_load_with_clip_benchmark(tmp_path: Path) -> None:
    from clip_benchmark.datasets.builder import build_dataset

    root = toyworld.write_eval_sets(tmp_path, test=120, train=240)
    shapes = build_dataset("wds/toy_shapes", root=str(root / "toy_shapes"), transform=None, split="test")
    assert shapes.classes == list(toyworld.CLASSES) and len(shapes.templates) == 3
    labels = [label for _, label in shapes]
    assert len(labels) == 120 and all(0 <= label < 48 for label in labels)
    train = build_dataset("wds/toy_shapes", root=str(root / "toy_shapes"), transform=None, split="train")
    assert sum(1 for _ in train) == 240
    captions = build_dataset(
        "wds/toy_captions",
        root=str(root / "toy_captions"),
        transform=None,
        split="test",
        task="zeroshot_retrieval",
    )
    pairs = list(captions)
    assert len(pairs) == 60 and all(isinstance(texts, list) and texts for _, texts in pairs)


def test_shifted_set_differs_from_the_in_distribution_one(tmp_path: Path) -> None:
    same = toyworld._sample(0, toyworld.STREAM_CLS_TEST, 3, 32)
    shifted = toyworld._sample(0, toyworld.STREAM_SHIFTED, 3, 32, shifted=True)
    assert shifted.attributes["background"] in toyworld.SHIFTED_BACKGROUNDS
    assert same.attributes["background"] in toyworld.BACKGROUNDS


def test_cli_writes_the_world_once(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["toyworld", "--root", str(tmp_path), "--data", "toy-1k"])
    assert result.exit_code == 0, result.output
    shard = tmp_path / "toy" / "toy-1k" / "00000.tar"
    assert shard.is_file() and (tmp_path / "toy" / "eval" / "toy_shapes" / "classnames.txt").is_file()
    first = shard.stat().st_mtime_ns
    assert runner.invoke(main, ["toyworld", "--root", str(tmp_path), "--data", "toy-1k"]).exit_code == 0
    assert shard.stat().st_mtime_ns == first


def test_cli_refuses_a_data_set_that_is_not_toy(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["toyworld", "--root", str(tmp_path), "--data", "LAION-400M"])
    assert result.exit_code == 2
    assert "LAION-400M" in result.output and "not a toy data set" in result.output
    assert not any(tmp_path.iterdir())
