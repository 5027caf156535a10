"""What runs on the compute side: one grid point, as a submitit checkpointable job.

The same callable runs in a Slurm task (one per GPU) and in a local worker process. On a
time limit or preemption submitit calls ``checkpoint``, which hands back this very job
to be requeued; the trainer then continues from its latest checkpoint (``--resume
latest``), so the samples seen end exactly as planned.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import submitit

from scaling.config import EvalSpec, ModelSpec
from scaling.grid import GridPoint

Handler = Callable[[int, FrameType | None], Any]


@dataclass(frozen=True)
class PointSpec:
    """Everything a worker needs to run a point, with no config files to read."""

    point: GridPoint
    model: ModelSpec
    evals: EvalSpec
    runs_root: str


class PointJob(submitit.helpers.Checkpointable):
    def __init__(self, spec: PointSpec) -> None:
        self.spec = spec

    def __call__(self) -> str:
        from scaling.train import run_point, train_other_rank

        rank = _distributed_rank()
        s = self.spec
        _signals_for_this_process_only()
        if rank != 0:
            train_other_rank(s.point, s.model, s.runs_root)
            _ignore_requeue_signal()
            return f"rank {rank} done"
        outcome = run_point(s.point, s.model, s.evals, s.runs_root, quiet=True)
        _ignore_requeue_signal()
        if outcome.status == "failed":
            # A failed run exits non-zero, so Slurm and the local runner both say FAILED.
            raise RuntimeError(f"point {s.point.id} failed: {outcome.error}")
        return outcome.status

    def checkpoint(self, *args: object, **kwargs: object) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on a time limit or preemption, before it requeues the job:
        the trainer's checkpoints are the state, so the same job is resubmitted as is."""
        from scaling.train import REQUEUEING

        REQUEUEING.set()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _requeue_signal() -> signal.Signals:
    # submitit's own choice: USR2 unless $SUBMITIT_PREEMPT_SIGNAL names another.
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]


def _signals_for_this_process_only() -> None:
    """Slurm signals every process of the step, and the trainer's DataLoader workers are
    forks that inherit submitit's handlers: each would checkpoint and requeue the job too,
    and two processes writing the job's pickle at once fail the run. Only this process acts."""
    me = os.getpid()
    for signum in (_requeue_signal(), signal.SIGTERM, signal.SIGCONT):
        handler = signal.getsignal(signum)
        if callable(handler):
            signal.signal(signum, _guarded(handler, me))


def _guarded(handler: Handler, pid: int) -> Handler:
    def handle(signum: int, frame: FrameType | None) -> None:
        if os.getpid() == pid:
            handler(signum, frame)

    return handle


def _ignore_requeue_signal() -> None:
    """Once the point's outcome is written there is nothing to resume. Slurm's warning can
    still arrive (its timer has a 60 s resolution): ignored, it neither requeues a finished
    job nor, reset to its default by Python's shutdown, kills it as FAILED."""
    signal.signal(_requeue_signal(), signal.SIG_IGN)


def _distributed_rank() -> int:
    """Under Slurm with several tasks, export torch.distributed's variables from the job
    (every GPU of the node stays visible: open_clip picks ``cuda:LOCAL_RANK`` itself)."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return int(env.rank)
    return 0


def run_dir_of(spec: PointSpec) -> Path:
    return Path(spec.runs_root) / spec.point.id
