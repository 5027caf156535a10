"""Train one grid point: open_clip's own trainer in this process, on every rank.

The same function runs on a laptop CPU with a toy model and on a Slurm GPU node with a
LAION shard set; the trainer reads the distributed environment itself. Every run lives in
``{runs_root}/{point id}``; the resolved point is written there before training, the
trainer always gets ``--resume latest`` (a rerun continues from the last checkpoint, never
from scratch), and training ends in ``trained.json`` (evaluation, its own job, reads it and
writes ``outcome.json``) or, if it failed or diverged, in ``outcome.json`` itself.
``run_point`` does both in one process, as ``scaling run`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from dataclasses import asdict
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from scaling import checkpoints, distributed, outlog
from scaling.clock import stamp
from scaling.compute import TRAIN_FLOPS_PER_MAC
from scaling.config import EvalSpec, ModelSpec
from scaling.errors import ClipscaleError
from scaling.files import write_atomic
from scaling.grid import GridPoint
from scaling.outcome import (
    POINT_FILE,
    RESULTS,
    Outcome,
    Trained,
    read_outcome,
    read_trained,
    set_aside_failure,
    write_outcome,
    write_trained,
)
from scaling.runspec import RunSpec, run_dir
from scaling.shards import check_shards
from scaling.trainargs import open_clip_argv
from scaling.trainerlog import (
    LOG_TAIL,
    Diverged,
    Progress,
    console,
    console_path,
    divergence_watch,
    progress_handler,
    tail,
)

# Set when the job is about to be requeued (time limit, preemption): the SystemExit that
# follows is then an interruption to resume from, not the run's outcome.
REQUEUEING = threading.Event()

__all__ = ["REQUEUEING", "RunSpec", "check_shards", "open_clip_argv", "run_dir", "run_point", "train"]


# ---------------------------------------------------------------- checks before training


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".clipscale-write-test-{socket.gethostname()}-{os.getpid()}"  # one per rank
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ClipscaleError(f"run directory {directory} is not writable ({e.strerror})") from None


def _write_point(directory: Path, point: GridPoint) -> None:
    """The resolved point beside the run, written before training; a different point
    under the same id would mean two configs share a directory, which is never right."""
    text = json.dumps(asdict(point), indent=2, sort_keys=True) + "\n"
    path = directory / POINT_FILE
    if path.exists():
        existing = json.loads(path.read_text())
        if existing.get("id") != point.id:
            raise ClipscaleError(f"{path} belongs to run {existing.get('id')!r}, not {point.id!r}")
        if existing == json.loads(text):
            return
    write_atomic(path, text)


# ---------------------------------------------------------------- running


def run_point(
    point: GridPoint,
    model: ModelSpec,
    evals: EvalSpec,
    runs_root: str | Path,
    progress: Progress | None = None,
    quiet: bool = False,
    policy: checkpoints.CheckpointPolicy | None = None,
) -> Outcome:
    """Train (or resume) and evaluate one point in this process; return its outcome.

    A point whose outcome says it succeeded or diverged is not run again. Bad input
    (missing or corrupt shards, incomplete evaluation sets, an unwritable directory, an
    unfinished first stage) raises ClipscaleError before anything is trained.
    """
    from scaling.evaluate import evaluate_run

    root = str(Path(runs_root).resolve())
    spec = RunSpec(point, model, evals, root, policy or checkpoints.CheckpointPolicy())
    ended = train(spec, progress, quiet)
    if isinstance(ended, Outcome):
        return ended
    return evaluate_run(spec, quiet)


def train(spec: RunSpec, progress: Progress | None = None, quiet: bool = True) -> Trained | Outcome | None:
    """Train this rank's part of a point. Rank 0 returns the training record (training
    finished as planned) or the outcome that ended the run (failed, diverged); other ranks
    return None, or raise if their own part failed. A finished run is not trained again."""
    from scaling.evaluate import check_eval_sets  # no torch at import

    point, directory = spec.point, spec.directory
    rank = distributed.this_rank()
    done = read_outcome(directory) if directory.is_dir() else None
    if done is not None and done.status in RESULTS:
        return done if rank.rank == 0 else None
    trained = read_trained(directory) if directory.is_dir() else None
    if trained is not None:  # only its evaluation is left
        return trained if rank.rank == 0 else None
    if rank.rank == 0:  # first: a retry that stops at the checks below leaves no old error
        set_aside_failure(directory)
    root = Path(spec.runs_root)
    # Every rank runs the cheap checks, so that none waits in the rendezvous for a peer that
    # stopped at them; the shards (validated before submission) only rank 0 reads again, as
    # a thousand ranks stat-ing 200k shards each would load the shared file system.
    pretrained = None if point.resumes_parent else _parent_checkpoint(root, point)
    if rank.rank == 0:
        check_shards(point.shards)
    check_eval_sets(spec.evals)
    _check_writable(directory)
    if rank.rank == 0:
        _write_point(directory, point)
        note = checkpoints.prepare_resume(directory)
        if note:
            _note(directory, note)
        if point.resumes_parent:
            _continue_parent(root, point, directory)
    record = distributed.RankRecord(directory, rank, console_path(directory, rank.rank))
    record.start()
    started = now()
    device = torch_device()
    error: str | None = None
    failure: BaseException | None = None
    diverged = False
    try:
        with (
            console(directory, quiet, rank.rank),
            progress_handler(progress),
            divergence_watch(),
            distributed.trainer_patches(device, point.train.dist_timeout_min),
        ):
            code = _train(point, spec.model, root, device, pretrained, spec.checkpoints)
        if code == -1:
            error = "open_clip_train refused to start (see console.log)"
    except KeyboardInterrupt:
        raise  # no outcome: the run is unfinished and resumes next time
    except SystemExit as e:  # the trainer's argparse exits on arguments it rejects
        if REQUEUEING.is_set():
            raise  # no outcome: the requeued job resumes from the latest checkpoint
        error, failure = f"open_clip_train exited with {e.code} (bad extra_args? see console.log)", e
    except Diverged as e:
        diverged, error, failure = True, str(e), e
    except Exception as e:  # the trainer's failure is the run's outcome, not ours
        error, failure = f"{type(e).__name__}: {e}", e
    finally:
        failed_at = distributed.now()  # before leaving: peers fail on our leaving, after us
        distributed.leave()
    record.end(error if not diverged else None, failure if not diverged else None)
    if rank.rank != 0:
        if error and not diverged:
            raise RuntimeError(f"rank {rank.rank}: {error}")
        return None
    return _finish_training(spec, rank, started, error, diverged, device, failed_at)


def _finish_training(
    spec: RunSpec, rank: distributed.Rank, started: str, error: str | None, diverged: bool, device: str,
    failed_at: str = "",
) -> Trained | Outcome:  # fmt: skip
    """Rank 0, after the trainer returned or raised: the training record, or the outcome."""
    directory, point = spec.directory, spec.point
    log_path = directory / "out.log"
    log = outlog.parse(log_path.read_text() if log_path.exists() else "")
    failed_rank, lines = None, tail(directory)
    if error is not None and not diverged and rank.world > 1:
        peer = distributed.first_failure(directory, rank, failed_at)
        if peer is not None:
            failed_rank, error = int(peer["rank"]), f"rank {peer['rank']}: {peer['error']} (rank 0: {error})"
            # The failing rank's own last words first: they say why, rank 0's say what followed.
            theirs = [f"rank {peer['rank']}: {line}" for line in distributed.log_tail(peer["log"])]
            lines = theirs[-LOG_TAIL // 2 :] + lines[-LOG_TAIL // 2 :]
    diverged = diverged or (error is None and log.diverged)
    final = None
    if error is None and not diverged:
        final = checkpoints.finish(directory, spec.checkpoints)
    if diverged:
        error = error or "the training loss became NaN or infinite"
    elif error is None and final is None:
        error = f"training ended without a readable final checkpoint ({checkpoints.LATEST})"
    elif error is None and log.samples_seen != point.trained_samples:
        error = f"the trainer saw {log.samples_seen:,} samples; the plan says {point.trained_samples:,}"
    train_time = log.train_time_s or None
    speed = log.steady_samples_per_s or (round(log.samples_seen / train_time, 3) if train_time else None)
    if error is None and final is not None:
        trained = Trained(
            # What the weights have seen: a trajectory's run continues its parent's samples.
            id=point.id, samples_seen=point.samples_seen - point.trained_samples + log.samples_seen,
            epochs=point.train.epochs or 0,
            checkpoint=str(final.relative_to(directory)), train_time_s=train_time, samples_per_s=speed,
            mfu=_mfu(spec, speed, rank.world, device), ranks=rank.world, loss=log.loss_summary(),
            started_at=started, finished_at=now(), host=socket.gethostname(),
        )  # fmt: skip
        write_trained(directory, trained)
        return trained
    inherited = point.samples_seen - point.trained_samples  # the trunk's, for a trajectory's run
    outcome = Outcome(
        id=point.id, status="diverged" if diverged else "failed",
        samples_seen=inherited + log.samples_seen if log.samples_seen else None,
        samples_seen_planned=point.samples_seen,
        epochs=point.train.epochs or 0, wall_time_s=0.0, train_time_s=train_time, samples_per_s=speed,
        loss=log.loss_summary(), error=error, log_tail=lines[-LOG_TAIL:], started_at=started,
        finished_at=now(), host=socket.gethostname(), versions=versions(), ranks=rank.world,
        failed_rank=failed_rank if failed_rank is not None else (0 if not diverged else None), stage="train",
    )  # fmt: skip
    return write_outcome(directory, outcome)


def _note(directory: Path, text: str) -> None:
    """A line of clipscale's own in the run's log, in the trainer's format."""
    # Local time, as the trainer's own lines in the same log have it.
    when = datetime.now().strftime("%Y-%m-%d,%H:%M:%S")
    with open(directory / "out.log", "a") as f:
        f.write(f"{when} | WARNING | clipscale: {text}\n")


def _mfu(spec: RunSpec, samples_per_s: float | None, ranks: int, device: str) -> float | None:
    """Model-FLOPs utilisation: 6 FLOPs per MAC per sample against the GPUs' bf16 peak.
    Not for CPUs, whose peak the plan does not know."""
    if device != "cuda" or not samples_per_s or not spec.gmacs_per_sample or not spec.peak_tflops:
        return None
    flops = samples_per_s * TRAIN_FLOPS_PER_MAC * spec.gmacs_per_sample * 1e9
    return round(flops / (ranks * spec.peak_tflops * 1e12), 4)


def _train(
    point: GridPoint,
    model: ModelSpec,
    root: Path,
    device: str,
    pretrained: Path | None,
    policy: checkpoints.CheckpointPolicy,
) -> int | None:
    from open_clip_train.main import main

    from scaling.registry import register_models

    register_models([model])
    return main(open_clip_argv(point, root, device, pretrained, policy))


def _continue_parent(root: Path, point: GridPoint, directory: Path) -> None:
    """A trajectory's run (a trunk segment, a branch) resumes its parent's final checkpoint:
    weights, optimizer state and epoch. Linked in as this run's latest checkpoint, it is what
    ``--resume latest`` reads until the run writes its own (the trainer replaces the latest
    by a rename, so the parent's file is never written through the link)."""
    if (checkpoints.folder(directory) / checkpoints.LATEST).exists():
        return  # resumed before: its own latest checkpoint is further along
    parent_dir = root / str(point.parent)
    trained = read_trained(parent_dir) if parent_dir.is_dir() else None
    source = parent_dir / trained.checkpoint if trained is not None else None
    if source is None or not checkpoints.readable(source):
        raise ClipscaleError(
            f"point {point.id} resumes the trunk's checkpoint of {point.parent}, which "
            + ("has not finished training" if trained is None else f"is gone or unreadable ({source})")
        )
    checkpoints.adopt(source, directory)
    _note(directory, f"resuming the trunk at epoch {point.start_epoch} from {source}")


def _parent_checkpoint(root: Path, point: GridPoint) -> Path | None:
    """A second stage starts from its first stage's final checkpoint (``--pretrained``
    resizes position embeddings for the new image size and text length)."""
    if point.parent is None:
        return None
    parent_dir = root / point.parent
    outcome = read_outcome(parent_dir) if parent_dir.is_dir() else None
    if outcome is None or outcome.status != "succeeded" or outcome.checkpoint is None:
        raise ClipscaleError(f"point {point.id} needs its first stage {point.parent} to have succeeded first")
    return parent_dir / outcome.checkpoint


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def now() -> str:
    return stamp("seconds")


def versions() -> dict[str, str]:
    out = {}
    for dist in ("clipscale", "open_clip_torch", "torch", "clip-benchmark"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out
