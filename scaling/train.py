"""Run one grid point: open_clip's own trainer in this process, then the evaluations.

The same function runs on a laptop CPU with a toy model and on a Slurm GPU node with a
LAION shard set: the trainer reads the distributed environment itself. Every run lives
in ``{runs_root}/{point id}``; the resolved point is written there before training, the
trainer always gets ``--resume latest`` (so a rerun continues from the last checkpoint,
never from scratch), and the run ends with an atomically written ``outcome.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TextIO

from scaling import trainlog
from scaling.config import EvalSpec, ModelSpec
from scaling.errors import ClipscaleError
from scaling.files import write_atomic
from scaling.grid import GridPoint
from scaling.outcome import POINT_FILE, Outcome, read_outcome, write_outcome

Progress = Callable[[int, int, int], None]  # (epoch, samples in epoch, samples per epoch)
# Set when the job is about to be requeued (time limit, preemption): the SystemExit that
# follows is then an interruption to resume from, not the run's outcome.
REQUEUEING = threading.Event()
LOG_TAIL = 40
_FULL_CHECK_BYTES = 2 << 30  # data sets up to this size have every sample decoded first


def run_dir(runs_root: str | Path, point: GridPoint) -> Path:
    return Path(runs_root) / point.id


def checkpoint_of(directory: Path, epoch: int) -> Path:
    return directory / "checkpoints" / f"epoch_{epoch}.pt"


def open_clip_argv(
    point: GridPoint, runs_root: Path, device: str, pretrained: Path | None = None
) -> list[str]:
    """The ``open_clip_train.main`` arguments of a point: nothing left to its defaults
    that changes what is trained."""
    t = point.train
    assert t.epochs is not None and t.train_num_samples is not None
    batches_per_epoch = point.samples_per_epoch // (t.batch_size * t.gpus)
    argv = [
        "--model", point.model,
        "--train-data", point.shards,
        "--dataset-type", "webdataset",
        "--dataset-resampled",
        "--train-num-samples", str(t.train_num_samples),
        "--epochs", str(t.epochs),
        "--batch-size", str(t.batch_size),
        "--accum-freq", str(t.accum_freq),
        "--workers", str(t.workers),
        "--lr", repr(t.lr),
        "--warmup", str(t.warmup),
        "--lr-scheduler", t.lr_scheduler,
        "--wd", repr(t.wd),
        "--beta1", repr(t.beta1),
        "--beta2", repr(t.beta2),
        "--eps", repr(t.eps),
        "--precision", t.precision,
        "--seed", str(t.seed),
        "--device", device,
        # NCCL needs GPUs; a multi-process run on CPUs talks through gloo.
        "--dist-backend", "nccl" if device == "cuda" else "gloo",
        "--logs", str(runs_root),
        "--name", point.id,
        "--resume", "latest",
        "--save-frequency", "1",
        "--report-to", "",
        # Often enough for a loss curve and a progress bar, and always at an epoch's end.
        "--log-every-n-steps", str(max(1, min(100, batches_per_epoch // 20))),
    ]  # fmt: skip
    if t.image_size is not None:
        argv += ["--force-image-size", str(t.image_size)]
    if t.context_length is not None:
        argv += ["--force-context-length", str(t.context_length)]
    if t.patch_dropout is not None:
        argv += ["--force-patch-dropout", repr(t.patch_dropout)]
    if pretrained is not None:
        argv += ["--pretrained", str(pretrained)]
    return argv + list(t.extra_args)


# ---------------------------------------------------------------- checks before training


def check_shards(pattern: str) -> list[Path]:
    """Every shard exists and is not empty; small local data sets are decoded whole."""
    if "://" in pattern or pattern.startswith("pipe:"):
        return []  # remote data is the trainer's to stream
    from braceexpand import braceexpand

    paths = [Path(p) for part in pattern.split("::") for p in braceexpand(part)]
    for path in paths:
        if not path.is_file():
            raise ClipscaleError(f"shard {path} not found")
        if path.stat().st_size == 0:
            raise ClipscaleError(f"shard {path} is empty")
    if sum(p.stat().st_size for p in paths) <= _FULL_CHECK_BYTES:
        for path in paths:
            _check_samples(path)
    return paths


def _check_samples(path: Path) -> None:
    from PIL import Image

    samples: dict[str, set[str]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                samples.setdefault(key, set()).add(ext)
                if ext in ("jpg", "jpeg", "png", "webp"):
                    data = tar.extractfile(member)
                    assert data is not None
                    try:
                        with Image.open(data) as image:
                            image.verify()
                    except Exception as e:  # PIL raises many types for bad bytes
                        raise ClipscaleError(
                            f"shard {path}: sample {key} has a corrupt image ({e})"
                        ) from None
    except (tarfile.TarError, OSError) as e:
        raise ClipscaleError(f"shard {path} is not a readable tar file ({e})") from None
    if not samples:
        raise ClipscaleError(f"shard {path} holds no samples")
    for key, exts in samples.items():
        if not exts & {"jpg", "jpeg", "png", "webp"} or "txt" not in exts:
            raise ClipscaleError(f"shard {path}: sample {key} lacks an image or a caption")


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".clipscale-write-test"
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
) -> Outcome:
    """Train (or resume) and evaluate one point; return its outcome.

    A point whose outcome says it succeeded or diverged is not run again. Bad input
    (missing or corrupt shards, incomplete evaluation sets, an unwritable directory, an
    unfinished first stage) raises ClipscaleError before anything is trained.
    """
    from scaling.evaluate import check_eval_sets  # no torch at import

    root = Path(runs_root).resolve()
    directory = run_dir(root, point)
    done = read_outcome(directory) if directory.is_dir() else None
    if done is not None and done.status in ("succeeded", "diverged"):
        return done
    pretrained = _parent_checkpoint(root, point)
    check_shards(point.shards)
    check_eval_sets(evals)
    _check_writable(directory)
    _write_point(directory, point)

    started, clock = _now(), time.monotonic()
    device = _device()
    error: str | None = None
    try:
        with _trainer_output(directory, quiet), _progress_handler(progress):
            code = _train(point, model, root, device, pretrained)
        if code == -1:
            error = "open_clip_train refused to start (see console.log)"
    except KeyboardInterrupt:
        raise  # no outcome: the run is unfinished and resumes next time
    except SystemExit as e:  # the trainer's argparse exits on arguments it rejects
        if REQUEUEING.is_set():
            raise  # no outcome: the requeued job resumes from the latest checkpoint
        error = f"open_clip_train exited with {e.code} (bad extra_args? see console.log)"
    except Exception as e:  # the trainer's failure is the run's outcome, not ours
        error = f"{type(e).__name__}: {e}"
    return _finish(point, evals, directory, device, started, clock, error, quiet)


def train_other_rank(point: GridPoint, model: ModelSpec, runs_root: str | Path) -> None:
    """A rank other than 0 of a multi-process run: train beside rank 0, which alone writes
    ``point.json`` and ``outcome.json`` and evaluates. It skips a finished run, as rank 0
    does, so that no rank waits for peers that never start."""
    root = Path(runs_root).resolve()
    directory = run_dir(root, point)
    done = read_outcome(directory) if directory.is_dir() else None
    if done is not None and done.status in ("succeeded", "diverged"):
        return
    pretrained = _parent_checkpoint(root, point)
    directory.mkdir(parents=True, exist_ok=True)
    with _trainer_output(directory, quiet=True):
        _train(point, model, root, _device(), pretrained)


def _finish(
    point: GridPoint,
    evals: EvalSpec,
    directory: Path,
    device: str,
    started: str,
    clock: float,
    error: str | None,
    quiet: bool,
) -> Outcome:
    log_path = directory / "out.log"
    log = trainlog.parse(log_path.read_text() if log_path.exists() else "")
    status = "failed"
    metrics: dict[str, dict[str, float | None]] = {}
    final = checkpoint_of(directory, point.train.epochs or 0)
    if error is None and log.diverged:
        status, error = "diverged", "the training loss became NaN or infinite"
    elif error is None and not final.exists():
        error = f"training ended without its final checkpoint {final.name}"
    elif error is None and log.samples_seen != point.samples_seen:
        error = f"the trainer saw {log.samples_seen:,} samples; the plan says {point.samples_seen:,}"
    elif error is None:
        try:
            from scaling.evaluate import evaluate

            t = point.train
            with _trainer_output(directory, quiet):  # open_clip logs with the root logger
                metrics = evaluate(
                    point.model, final, evals, device, t.image_size, t.context_length, directory / "features"
                )
            status = "succeeded"
        except ClipscaleError:
            raise
        except Exception as e:  # evaluation failing is this run's failure
            error = f"evaluation failed: {type(e).__name__}: {e}"
    train_time = log.train_time_s or None
    outcome = Outcome(
        id=point.id,
        status=status,
        samples_seen=log.samples_seen or None,
        samples_seen_planned=point.samples_seen,
        epochs=point.train.epochs or 0,
        wall_time_s=round(time.monotonic() - clock, 3),
        train_time_s=train_time,
        samples_per_s=round(log.samples_seen / train_time, 3) if train_time else None,
        metrics=metrics,
        loss=log.loss_summary(),
        error=error,
        log_tail=_tail(directory) if status != "succeeded" else [],
        started_at=started,
        finished_at=_now(),
        host=socket.gethostname(),
        versions=_versions(),
    )
    return write_outcome(directory, outcome)


def _train(
    point: GridPoint, model: ModelSpec, root: Path, device: str, pretrained: Path | None
) -> int | None:
    from open_clip_train.main import main

    from scaling.registry import register_models

    register_models([model])
    return main(open_clip_argv(point, root, device, pretrained))


def _parent_checkpoint(root: Path, point: GridPoint) -> Path | None:
    """A second stage starts from its first stage's final checkpoint (``--pretrained``
    resizes position embeddings for the new image size and text length)."""
    if point.parent is None:
        return None
    parent_dir = root / point.parent
    outcome = read_outcome(parent_dir) if parent_dir.is_dir() else None
    if outcome is None or outcome.status != "succeeded":
        raise ClipscaleError(f"point {point.id} needs its first stage {point.parent} to have succeeded first")
    return checkpoint_of(parent_dir, outcome.epochs)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _trainer_output(directory: Path, quiet: bool) -> Iterator[None]:
    """Keep the trainer's logging set-up from outliving the run (it adds a file and a
    console handler on every call) and, if quiet, send its console to console.log. A quiet
    run also sets the process's own root handlers aside: the trainer logs at INFO."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    aside = handlers if quiet else []
    # It also sets every logger to INFO, which makes torch chatty at exit: restore them.
    levels = {name: logging.getLogger(name).level for name in [*root.manager.loggerDict, ""]}
    with _console_to_file(directory, quiet):
        for handler in aside:
            root.removeHandler(handler)
        try:
            yield
        finally:
            for handler in root.handlers[:]:
                if handler not in handlers:
                    root.removeHandler(handler)
                    handler.close()
            for handler in aside:
                root.addHandler(handler)
            for name in root.manager.loggerDict:
                logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))
            root.setLevel(levels[""])


@contextlib.contextmanager
def _console_to_file(directory: Path, quiet: bool) -> Iterator[None]:
    """If quiet, what the trainer and CLIP_benchmark print goes to console.log."""
    if not quiet:
        yield
        return
    console = sys.stderr
    with (
        open(directory / "console.log", "a") as stream,
        contextlib.redirect_stdout(stream),
        contextlib.redirect_stderr(stream),
    ):
        try:
            yield
        finally:
            _rebind_handlers(stream, console)


def _rebind_handlers(stream: TextIO, console: TextIO) -> None:
    """Libraries imported during the run (transformers, huggingface_hub) give their loggers
    a handler on the console of that moment, console.log, which closes with the run: later
    messages of the process (submitit's own) would fail on it. Send them to the console."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                handler.setStream(console)


class _ProgressHandler(logging.Handler):
    def __init__(self, callback: Progress):
        super().__init__(logging.INFO)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        m = trainlog.PROGRESS.search(record.getMessage())
        if m:
            self.callback(int(m["epoch"]), int(m["n"]), int(m["total"]))


@contextlib.contextmanager
def _progress_handler(progress: Progress | None) -> Iterator[None]:
    if progress is None:
        yield
        return
    handler = _ProgressHandler(progress)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)


def _tail(directory: Path) -> list[str]:
    lines: list[str] = []
    for name in ("out.log", "console.log"):
        path = directory / name
        if path.exists():
            lines += [f"{name}: {line}" for line in path.read_text(errors="replace").splitlines()[-LOG_TAIL:]]
    return [_ANSI.sub("", line) for line in lines[-LOG_TAIL:]]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("clipscale", "open_clip_torch", "torch", "clip-benchmark"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out
