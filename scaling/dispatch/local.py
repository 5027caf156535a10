"""The local side of dispatch: a detached runner per submission, bounded parallelism.

``scaling launch cluster=local`` hands a batch of points to a runner process in its own
session (it outlives the launcher, as a Slurm job would) and returns. The runner runs
each point in a worker process (the same ``PointJob`` a Slurm task runs), at most
``cluster.parallelism`` at once on this machine across all runners (lock files), and
writes each task's state to ``{folder}/{index}.state``.

A launcher killed between spawning the runner and recording it is settled by a claim
file created exclusively: the runner claims its batch before running anything, and
recovery claims it as void if no runner did. Exactly one of them wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scaling.errors import ClipscaleError
from scaling.files import write_atomic

CLAIM = "claim"
FINAL = ("completed", "failed", "cancelled", "lost")


@dataclass(frozen=True)
class LocalState:
    state: str  # pending, running, completed, failed, cancelled, lost
    node: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    reason: str | None = None


def parallelism(options: dict[str, Any]) -> int:
    value = options.get("parallelism", 1)
    unknown = set(options) - {"parallelism"}
    if unknown:
        raise ClipscaleError(
            f"cluster: unknown key {sorted(unknown)[0]!r} for a local cluster (valid: parallelism)"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClipscaleError(f"cluster.parallelism must be a whole number of at least 1, got {value!r}")
    return value


# ---------------------------------------------------------------- launcher side


def submit(folder: Path, jobs: Sequence[Any], slots: Path, width: int, after: Sequence[int] = ()) -> str:
    """Write the batch's jobs and start its runner; the runner's job id ``local:PID``.
    The runner waits for the runners ``after`` (a second stage's first stages) to end."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, job in enumerate(jobs):
        with open(folder / f"{i}.pkl.tmp", "wb") as f:
            pickle.dump(job, f)
        os.replace(folder / f"{i}.pkl.tmp", folder / f"{i}.pkl")
    batch = {"size": len(jobs), "slots": str(slots), "parallelism": width, "after": list(after)}
    write_atomic(folder / "batch.json", json.dumps(batch) + "\n")
    with open(folder / "runner.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scaling.dispatch.local", str(folder)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
        )  # fmt: skip
    return f"local:{proc.pid}"


def settle(folder: Path) -> str | None:
    """For a submission whose launcher died: the runner's job id if a runner claimed the
    batch, else None after claiming it void (no runner will ever run it)."""
    try:
        fd = os.open(folder / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return _claimant(folder)
    except FileNotFoundError:  # the folder was never made: nothing was submitted
        return None
    with os.fdopen(fd, "w") as f:
        f.write("void\n")
    return None


def _claimant(folder: Path) -> str | None:
    for _ in range(50):  # the runner writes its pid right after creating the file
        text = (folder / CLAIM).read_text().strip()
        if text:
            return None if text == "void" else f"local:{text.split()[1]}"
        time.sleep(0.02)
    return None


def task_states(folder: Path, size: int, job_id: str | None) -> dict[int, LocalState]:
    """Each task's state from its state file; tasks of a runner that is gone are lost."""
    runner = _runner_pid(folder) or (int(job_id.split(":")[1]) if job_id else None)
    alive = runner is not None and _alive(runner)
    out: dict[int, LocalState] = {}
    for i in range(size):
        state = _read_state(folder, i)
        if state is None:
            out[i] = LocalState("pending") if alive else LocalState("lost", reason="its runner stopped first")
        elif state.state == "running" and not alive:
            out[i] = LocalState("lost", state.node, state.started_at, None, "its runner stopped mid-run")
        else:
            out[i] = state
    return out


def cancel(folder: Path, indices: Sequence[int]) -> None:
    """Stop tasks of a batch: queued ones never start; running ones get SIGTERM."""
    for i in indices:
        state = _read_state(folder, i)
        if state is not None and state.state in FINAL:
            continue
        _write_state(folder, i, "cancelled", ended=True)
        if state is not None and state.state == "running":
            pid = _read_pid(folder, i)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)


def _runner_pid(folder: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = (folder / CLAIM).read_text().split()
        return int(text[1]) if text and text[0] == "runner" else None
    return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _read_state(folder: Path, index: int) -> LocalState | None:
    try:
        raw = json.loads((folder / f"{index}.state").read_text())
    except (OSError, ValueError):
        return None
    return LocalState(raw["state"], raw.get("node"), _time(raw.get("started")), _time(raw.get("ended")),
                      raw.get("reason"))  # fmt: skip


def _read_pid(folder: Path, index: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(json.loads((folder / f"{index}.state").read_text())["pid"])
    return None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=None) if text else None


def _now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


def _write_state(folder: Path, index: int, state: str, ended: bool = False, **extra: Any) -> None:
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads((folder / f"{index}.state").read_text())
    if old.get("state") == "cancelled" and state != "cancelled":
        return  # cancelled stays cancelled
    new = {**old, **extra, "state": state, "node": socket.gethostname()}
    if ended:
        new["ended"] = _now()
    write_atomic(folder / f"{index}.state", json.dumps(new) + "\n")


# ---------------------------------------------------------------- runner side


def _claim(folder: Path) -> bool:
    try:
        fd = os.open(folder / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"runner {os.getpid()}\n")
    return True


@contextlib.contextmanager
def _slot(slots: Path, width: int) -> Iterator[None]:
    """One of ``width`` machine-wide slots (lock files), waiting until one is free."""
    slots.mkdir(parents=True, exist_ok=True)
    while True:
        for k in range(width):
            f = open(slots / f"{k}.lock", "w")  # noqa: SIM115 (held across the yield)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            return
        time.sleep(0.5)


def _run_task(folder: Path, index: int, slots: Path, width: int) -> None:
    with _slot(slots, width):
        state = _read_state(folder, index)
        if state is not None and state.state == "cancelled":
            return
        # Points running side by side share the cores rather than each taking them all.
        env = {**os.environ}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // width)))
        with open(folder / f"{index}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "scaling.dispatch.local", str(folder), "--task", str(index)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env,
            )  # fmt: skip
            _write_state(folder, index, "running", pid=proc.pid, started=_now())
            code = proc.wait()
        if code == 0:
            _write_state(folder, index, "completed", ended=True, rc=0)
        else:
            reason = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
            _write_state(folder, index, "failed", ended=True, rc=code, reason=reason)


def runner(folder: Path) -> int:
    if not _claim(folder):
        return 0  # recovery voided this batch: its launcher died before recording it
    batch = json.loads((folder / "batch.json").read_text())
    while any(_alive(pid) for pid in batch.get("after", [])):
        time.sleep(1)
    tasks: queue.Queue[int] = queue.Queue()
    for i in range(batch["size"]):
        tasks.put(i)

    def work() -> None:
        while True:
            try:
                i = tasks.get_nowait()
            except queue.Empty:
                return
            _run_task(folder, i, Path(batch["slots"]), batch["parallelism"])

    threads = [threading.Thread(target=work) for _ in range(min(batch["parallelism"], batch["size"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


def task(folder: Path, index: int) -> int:
    with open(folder / f"{index}.pkl", "rb") as f:
        job = pickle.load(f)
    print(f"clipscale local task {index}: {job()}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[2] == "--task":
        sys.exit(task(Path(sys.argv[1]), int(sys.argv[3])))
    sys.exit(runner(Path(sys.argv[1])))
