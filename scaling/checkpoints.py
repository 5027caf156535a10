"""A run's checkpoints: what the trainer is told to write, what is kept, what resume reads.

open_clip_train writes ``epoch_N.pt`` in place (a kill during ``torch.save`` truncates it)
and, with ``--save-most-recent``, ``epoch_latest.pt`` through ``tmp.pt`` and a rename. The
policy here: the trainer keeps only the rolling ``epoch_latest.pt`` (``--save-frequency
0``), or also every N-th epoch (``checkpoints.keep_every``); ``--resume latest`` then
reads ``epoch_latest.pt`` alone. The final ``epoch_E.pt`` the trainer writes anyway is a
copy of the latest and is removed when training ends, unless it is kept. No torch here:
a checkpoint is checked as the zip file ``torch.save`` writes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from scaling.config import CheckpointPolicy

LATEST = "epoch_latest.pt"
TEMPORARY = "tmp.pt"
BYTES_PER_PARAM = 12  # fp32 weights and AdamW's two fp32 moments
_EPOCH = re.compile(r"^epoch_(\d+)\.pt$")


def folder(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def trainer_args(policy: CheckpointPolicy) -> list[str]:
    return ["--save-frequency", str(policy.keep_every), "--save-most-recent"]


def kept(policy: CheckpointPolicy, epoch: int) -> bool:
    """Whether the trainer keeps ``epoch_{epoch}.pt`` under this policy."""
    return policy.keep_every > 0 and epoch % policy.keep_every == 0


def readable(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint: a zip whose directory (at its very end, so
    a truncated file has none) lists the pickled dict, whose bytes match their CRC."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl")]
            if len(names) != 1:
                return False
            z.read(names[0])  # checks the CRC of the (small) pickle
            return True
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError):
        return False


def epochs_on_disk(run_dir: Path) -> dict[int, Path]:
    out = {}
    for path in folder(run_dir).glob("epoch_*.pt"):
        m = _EPOCH.match(path.name)
        if m:
            out[int(m.group(1))] = path
    return out


def prepare_resume(run_dir: Path) -> str | None:
    """Before training (again): leave ``epoch_latest.pt`` readable or absent, so that
    ``--resume latest`` never reads a half-written file. An unreadable one is set aside and
    the newest readable ``epoch_N.pt`` takes its place (else the run starts afresh); a
    leftover ``tmp.pt`` is removed. Returns what was done, for the log, or None."""
    ckpts = folder(run_dir)
    with contextlib.suppress(FileNotFoundError):
        (ckpts / TEMPORARY).unlink()
    latest = ckpts / LATEST
    if not latest.exists() or readable(latest):
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = latest.with_name(f"{LATEST}.unreadable-{stamp}")
    os.replace(latest, aside)
    said = f"{LATEST} was unreadable (set aside as {aside.name})"
    for _, path in sorted(epochs_on_disk(run_dir).items(), reverse=True):
        if readable(path):
            os.link(path, latest)
            return f"{said}; resuming from {path.name}"
    return f"{said} and no readable epoch is left: starting afresh"


def adopt(source: Path, run_dir: Path) -> Path:
    """Make ``source`` (another run's checkpoint) this run's latest: a hard link where the
    file system allows one (no copy of a multi-GB file), else a copy, put in place by a
    rename so that a kill leaves either no latest or a whole one."""
    folder(run_dir).mkdir(parents=True, exist_ok=True)
    latest = folder(run_dir) / LATEST
    staged = latest.with_name(f"{LATEST}.adopting")
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    try:
        os.link(source, staged)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, staged)
    os.replace(staged, latest)
    return latest


def finish(run_dir: Path, policy: CheckpointPolicy) -> Path | None:
    """After training: the final checkpoint (``epoch_latest.pt``, which now holds the last
    epoch), with the epochs the policy does not keep removed. None if there is none."""
    latest = folder(run_dir) / LATEST
    if not readable(latest):
        return None
    for epoch, path in epochs_on_disk(run_dir).items():
        if not kept(policy, epoch):
            path.unlink()  # the final epoch's copy of the latest, or a leftover
    for stray in folder(run_dir).glob(f"{LATEST}.unreadable-*"):
        stray.unlink()
    return latest


def checkpoint_gb(params: float) -> float:
    """Size of one checkpoint of a model with ``params`` parameters, in GB."""
    return params * BYTES_PER_PARAM / 1e9


def disk_gb(params: float, policy: CheckpointPolicy, epochs: int) -> float:
    """The most disk a run's checkpoints take at once: the latest, its temporary successor
    while it is written, the final epoch's copy, and the epochs kept."""
    kept_epochs = epochs // policy.keep_every if policy.keep_every else 0
    return checkpoint_gb(params) * (3 + kept_epochs)
