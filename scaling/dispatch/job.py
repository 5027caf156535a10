"""What runs on the compute side: one grid point's training or evaluation, as a submitit
checkpointable job.

A training job runs on every rank of the point (a Slurm task per GPU, or a local process
per rank); its evaluation is a job of its own that starts after it. On a time limit or
preemption submitit calls ``checkpoint``, which hands back this very job to be requeued:
training continues from its latest checkpoint (``--resume latest``), so the samples seen
end exactly as planned, and an evaluation starts again.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import submitit

from scaling.runspec import EVAL, TRAIN, RunSpec

Handler = Callable[[int, FrameType | None], Any]


class PointJob(submitit.helpers.Checkpointable):
    def __init__(self, spec: RunSpec, stage: str = TRAIN) -> None:
        self.spec = spec
        self.stage = stage

    @property
    def ranks(self) -> int:
        """Processes this job runs as: one per rank of a training, one for an evaluation."""
        return 1 if self.stage == EVAL else self.spec.point.train.gpus

    def __call__(self) -> str:
        from scaling import distributed
        from scaling.outcome import Outcome

        _signals_for_this_process_only()
        distributed.set_threads(self.spec.point.train.workers)
        if self.stage == EVAL:
            from scaling.evaluate import evaluate_run

            ended: Any = evaluate_run(self.spec)
        else:
            from scaling.train import train

            ended = train(self.spec)
        _ignore_requeue_signal()
        if isinstance(ended, Outcome) and ended.status == "failed":
            # A failed run exits non-zero, so Slurm and the local runner both say FAILED.
            raise RuntimeError(f"point {self.spec.point.id} failed: {ended.error}")
        return ended.status if isinstance(ended, Outcome) else f"{self.stage} done"

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
