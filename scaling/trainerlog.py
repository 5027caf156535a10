"""The trainer's logging, kept in its place: open_clip sets up logging on every call (a file
and a console handler, every logger at INFO); these keep that from outliving the run, send a
quiet run's console to console.log, turn its progress lines into a callback and stop the run
at the first loss that is not a finite number."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from scaling import outlog

Progress = Callable[[int, int, int], None]  # (epoch, samples in epoch, samples per epoch)
LOG_TAIL = 40


class Diverged(Exception):
    """The training loss stopped being a finite number: the run cannot recover."""


class _DivergenceWatch(logging.Handler):
    """Stops the trainer at the first logged loss that is NaN or infinite: raised from its
    own logging call, the exception ends training within one log step, not one run."""

    def emit(self, record: logging.LogRecord) -> None:
        m = outlog.LOSS.search(record.getMessage())
        if m and not all(math.isfinite(float(v)) for v in (m["loss"], m["avg"])):
            raise Diverged(f"the training loss became {m['loss']} at epoch {m['epoch']}: stopped")


@contextlib.contextmanager
def divergence_watch() -> Iterator[None]:
    handler = _DivergenceWatch(logging.INFO)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)


def console_path(directory: Path, rank: int) -> Path:
    return directory / ("console.log" if rank == 0 else f"console.rank{rank}.log")


@contextlib.contextmanager
def console(directory: Path, quiet: bool, rank: int = 0) -> Iterator[None]:
    """Keep the trainer's logging set-up from outliving the run (it adds a file and a
    console handler on every call) and, if quiet, send its console to console.log. A quiet
    run also sets the process's own root handlers aside: the trainer logs at INFO."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    aside = handlers if quiet else []
    # It also sets every logger to INFO, which makes torch chatty at exit: restore them.
    levels = {name: logging.getLogger(name).level for name in [*root.manager.loggerDict, ""]}
    with _console_to_file(console_path(directory, rank), quiet):
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
def _console_to_file(path: Path, quiet: bool) -> Iterator[None]:
    """If quiet, what the trainer and CLIP_benchmark print goes to ``path``."""
    if not quiet:
        yield
        return
    console = sys.stderr
    with (
        open(path, "a") as stream,
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
        m = outlog.PROGRESS.search(record.getMessage())
        if m:
            self.callback(int(m["epoch"]), int(m["n"]), int(m["total"]))


@contextlib.contextmanager
def progress_handler(progress: Progress | None) -> Iterator[None]:
    if progress is None:
        yield
        return
    handler = _ProgressHandler(progress)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)


def tail(directory: Path) -> list[str]:
    """The last lines of a run's trainer log and console (ANSI colours removed)."""
    lines: list[str] = []
    for name in ("out.log", "console.log"):
        path = directory / name
        if path.exists():
            lines += [f"{name}: {line}" for line in path.read_text(errors="replace").splitlines()[-LOG_TAIL:]]
    return [_ANSI.sub("", line) for line in lines[-LOG_TAIL:]]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
