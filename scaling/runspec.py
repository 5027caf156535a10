"""What a worker needs to run one point, with no config file to read: a frozen value that
the dispatcher pickles into each job. No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scaling.config import CheckpointPolicy, EvalSpec, ModelSpec
from scaling.grid import GridPoint

TRAIN, EVAL = "train", "eval"  # a point's two jobs: its training, then its evaluation


@dataclass(frozen=True)
class RunSpec:
    point: GridPoint
    model: ModelSpec
    evals: EvalSpec
    runs_root: str  # absolute
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    gmacs_per_sample: float | None = None  # for the run's model-FLOPs utilisation
    peak_tflops: float | None = None  # bf16 peak of the GPU the plan costs for

    @property
    def directory(self) -> Path:
        return run_dir(self.runs_root, self.point)


def run_dir(runs_root: str | Path, point: GridPoint) -> Path:
    return Path(runs_root) / point.id
