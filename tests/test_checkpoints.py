"""The checkpoint policy on real torch.save files: what is readable, what resume may read,
what is kept after a run, and the disk a run needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling import checkpoints
from scaling.config import CheckpointPolicy

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def save(path: Path, epoch: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "state_dict": {"w": torch.ones(256) * epoch}}, path)
    return path


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_whole_checkpoint_is_readable_and_a_cut_or_empty_one_is_not(tmp_path: Path) -> None:
    whole = save(tmp_path / "a.pt", 1)
    assert checkpoints.readable(whole)
    cut = save(tmp_path / "b.pt", 1)
    truncate(cut)
    empty = tmp_path / "c.pt"
    empty.write_bytes(b"")
    assert not checkpoints.readable(cut) and not checkpoints.readable(empty)
    assert not checkpoints.readable(tmp_path / "missing.pt")


def test_resume_falls_back_to_the_newest_whole_epoch(tmp_path: Path) -> None:
    ckpts = tmp_path / "checkpoints"
    save(ckpts / "epoch_1.pt", 1)
    save(ckpts / "epoch_2.pt", 2)
    truncate(save(ckpts / "epoch_3.pt", 3))  # killed while the trainer wrote it in place
    truncate(save(ckpts / "epoch_latest.pt", 3))
    (ckpts / "tmp.pt").write_bytes(b"half")
    note = checkpoints.prepare_resume(tmp_path)
    assert note is not None and "resuming from epoch_2.pt" in note
    assert checkpoints.readable(ckpts / "epoch_latest.pt")
    assert torch.load(ckpts / "epoch_latest.pt")["epoch"] == 2
    assert not (ckpts / "tmp.pt").exists() and len(list(ckpts.glob("epoch_latest.pt.unreadable-*"))) == 1
    assert checkpoints.prepare_resume(tmp_path) is None  # a readable latest is left alone


def test_resume_starts_afresh_when_nothing_whole_is_left(tmp_path: Path) -> None:
    truncate(save(tmp_path / "checkpoints" / "epoch_latest.pt", 1))
    assert "starting afresh" in (checkpoints.prepare_resume(tmp_path) or "")
    assert not (tmp_path / "checkpoints" / "epoch_latest.pt").exists()


@pytest.mark.parametrize(
    ("every", "left"), [(0, ["epoch_latest.pt"]), (2, ["epoch_2.pt", "epoch_4.pt", "epoch_latest.pt"])]
)
def test_finishing_keeps_the_latest_and_what_the_policy_names(
    tmp_path: Path, every: int, left: list[str]
) -> None:
    ckpts = tmp_path / "checkpoints"
    for epoch in (2, 3, 4):
        save(ckpts / f"epoch_{epoch}.pt", epoch)
    save(ckpts / "epoch_latest.pt", 4)
    truncate(save(ckpts / "epoch_latest.pt.unreadable-x", 1))
    final = checkpoints.finish(tmp_path, CheckpointPolicy(keep_every=every))
    assert final == ckpts / "epoch_latest.pt"
    assert sorted(p.name for p in ckpts.iterdir()) == left


def test_finishing_without_a_whole_latest_has_no_final_checkpoint(tmp_path: Path) -> None:
    truncate(save(tmp_path / "checkpoints" / "epoch_latest.pt", 4))
    assert checkpoints.finish(tmp_path, CheckpointPolicy()) is None


def test_trainer_arguments_and_disk() -> None:
    assert checkpoints.trainer_args(CheckpointPolicy()) == ["--save-frequency", "0", "--save-most-recent"]
    assert checkpoints.trainer_args(CheckpointPolicy(3))[:2] == ["--save-frequency", "3"]
    # ViT-B/32 (151.28M parameters): 1.8 GB a checkpoint with AdamW's moments; at most
    # three at once with the latest alone, plus the kept ones.
    assert checkpoints.checkpoint_gb(151.28e6) == pytest.approx(1.815, abs=1e-3)
    assert checkpoints.disk_gb(151.28e6, CheckpointPolicy(), 32) == pytest.approx(3 * 1.815, abs=1e-2)
    assert checkpoints.disk_gb(151.28e6, CheckpointPolicy(8), 32) == pytest.approx(7 * 1.815, abs=1e-2)
