"""What a run hands on, as atomic files in its run directory. No torch here.

- ``outcome.json``: the run's end (succeeded, diverged or failed), the one file the
  controller reads; replaced in one rename, so readers never see half of it.
- ``trained.json``: training finished as planned; the hand-over from the training job to
  the evaluation job, which reads it and writes the outcome.

A failed outcome is moved aside (to ``history/``) when the point is tried again, so a
retry that dies without a word never inherits the last attempt's error.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaling.errors import ClipscaleError
from scaling.files import write_atomic

OUTCOME_FILE = "outcome.json"
TRAINED_FILE = "trained.json"
POINT_FILE = "point.json"
HISTORY_DIR = "history"
STATUSES = ("succeeded", "failed", "diverged")
RESULTS = ("succeeded", "diverged")  # final: a point with one is never run again


@dataclass(frozen=True)
class Outcome:
    id: str
    status: str
    samples_seen: int | None  # counted from the trainer's own log
    samples_seen_planned: int
    epochs: int
    wall_time_s: float  # of the invocation that wrote this outcome
    train_time_s: float | None  # training alone, summed over every invocation
    samples_per_s: float | None
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    mfu: float | None = None  # model-FLOPs utilisation of training (on GPUs with a known peak)
    ranks: int = 1  # training processes
    failed_rank: int | None = None  # the rank whose failure ended the run, if one did
    stage: str = ""  # what failed: "train" or "eval" ("" for a success)
    checkpoint: str | None = None  # the final checkpoint, relative to the run directory
    loss: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    host: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return _to_json(self)


def _to_json(record: Any) -> str:
    """A hand-over file's text: sorted keys, non-finite numbers as null."""
    return json.dumps(json_safe(asdict(record)), indent=2, sort_keys=True, allow_nan=False) + "\n"


def json_safe(value: Any) -> Any:
    """Non-finite floats as None, in nested dicts, lists and tuples: JSON has no NaN, and a
    metric (or an interval) that is not a number is stored as missing."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_outcome(run_dir: Path, outcome: Outcome) -> Outcome:
    """Write the outcome; return it as it now reads back (non-finite numbers as None)."""
    text = outcome.to_json()
    write_atomic(run_dir / OUTCOME_FILE, text)
    return Outcome(**json.loads(text))


def read_outcome(run_dir: Path) -> Outcome | None:
    """The run's outcome, or None if it has none yet."""
    path = run_dir / OUTCOME_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ClipscaleError(f"{path} is not a readable outcome: {e}") from None
    try:
        return Outcome(**raw)
    except TypeError as e:
        raise ClipscaleError(f"{path} is not an outcome of this clipscale: {e}") from None


@dataclass(frozen=True)
class Trained:
    """Training finished with exactly the planned samples: what evaluation starts from."""

    id: str
    samples_seen: int
    epochs: int
    checkpoint: str  # relative to the run directory
    train_time_s: float | None
    samples_per_s: float | None
    mfu: float | None
    ranks: int
    loss: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    host: str = ""

    def to_json(self) -> str:
        return _to_json(self)


def write_trained(run_dir: Path, trained: Trained) -> None:
    write_atomic(run_dir / TRAINED_FILE, trained.to_json())


def read_trained(run_dir: Path) -> Trained | None:
    """The run's training record, or None if training has not finished."""
    path = run_dir / TRAINED_FILE
    try:
        return Trained(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        raise ClipscaleError(f"{path} is not a readable training record: {e}") from None


def set_aside_failure(run_dir: Path) -> Path | None:
    """Move a failed outcome to ``history/`` before the point is tried again; a result
    (succeeded, diverged) stays. Returns where it went."""
    path = run_dir / OUTCOME_FILE
    try:
        outcome = read_outcome(run_dir)
    except ClipscaleError:
        outcome = None  # unreadable: set it aside all the same
    if not path.exists() or (outcome is not None and outcome.status != "failed"):
        return None
    try:
        stamp = (outcome.finished_at if outcome else "") or str(int(path.stat().st_mtime))
        target = run_dir / HISTORY_DIR / f"outcome-{stamp.replace(':', '')}.json"
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
    except OSError as e:
        raise ClipscaleError(f"run directory {run_dir} is not writable ({e.strerror})") from None
    return target
