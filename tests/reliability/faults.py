"""Deterministic launcher faults: ``scaling launch`` run in a forked child that SIGKILLs itself
at exactly its Nth step, so every step of a launch is hit once, whatever the machine's speed.

A step is a call the launch makes that changes what survives it (the store, Slurm, the job
folder): before or after it, as STEPS lists. A first, unkilled run records the steps a launch
of the sweep takes; then one killed run per step.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (module, attribute, when): the calls a launch makes between its intent and its last record.
STEPS: tuple[tuple[str, str, str], ...] = (
    # The sweep's points and the batches' intents, each committed under the family's lock.
    ("scaling.dispatch.launch", "locked", "after"),
    # submitit moves the submission file right after sbatch returned, then each task's pickle.
    ("submitit.core.utils", "JobPaths.move_temporary_file", "before"),
    # The job id ("submitted") and the release ("released") recorded.
    ("scaling.dispatch.launch", "set_submission", "before"),
    ("scaling.dispatch.launch", "set_submission", "after"),
    # The same records, made while settling what an earlier, killed launch left.
    ("scaling.dispatch.recover", "set_submission", "before"),
    ("scaling.dispatch.recover", "set_submission", "after"),
    # Held in Slurm, its job id stored: about to be released.
    ("scaling.dispatch.slurm", "release", "before"),
)


def _wrap(events: list[str], kill_at: int | None, log: Path, module: str, attr: str, when: str) -> None:
    owner: Any = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    label = f"{when} {attr}"

    def step() -> None:
        events.append(label)
        with log.open("a") as f:  # written before the kill: the parent reads what was hit
            f.write(label + "\n")
        if kill_at is not None and len(events) - 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if when == "before":
            step()
        out = original(*args, **kwargs)
        if when == "after":
            step()
        return out

    setattr(owner, name, wrapped)


def run_launch(args: Sequence[str], kill_at: int | None, log: Path) -> tuple[int, list[str]]:
    """``scaling launch ARGS`` in a forked child killed at step ``kill_at`` (None: not killed).
    Returns the child's wait status and the steps it reached."""
    log.write_text("")
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            events: list[str] = []
            for module, attr, when in STEPS:
                _wrap(events, kill_at, log, module, attr, when)
            from scaling.cli import main

            main(["launch", *args], standalone_mode=False)
            code = 0
        except BaseException:  # anything else: the parent reports the exit code
            code = 71
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status, log.read_text().splitlines()


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def counts(steps: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in steps:
        out[s] = out.get(s, 0) + 1
    return out
