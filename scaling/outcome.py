"""The outcome of one run: written atomically as ``outcome.json`` in its run directory.

The compute node hands results to the controller through this file alone, so it is
replaced in one rename and readers never see half of it. No torch here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaling.errors import ClipscaleError
from scaling.files import write_atomic

OUTCOME_FILE = "outcome.json"
POINT_FILE = "point.json"
STATUSES = ("succeeded", "failed", "diverged")


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
    loss: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    host: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(json_safe(asdict(self)), indent=2, sort_keys=True, allow_nan=False) + "\n"


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
