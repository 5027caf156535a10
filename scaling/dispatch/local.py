"""The local side of dispatch: a detached runner per submission, bounded parallelism.

``scaling launch cluster=local`` hands a batch of points to a runner process in its own
session (it outlives the launcher, as a Slurm job would) and returns. The runner runs
each point in worker processes, one per rank (the same ``PointJob`` a Slurm task runs,
with the variables torchrun would set), at most ``cluster.parallelism`` points at once on
this machine across all runners (lock files), each on GPUs of its own when the machine has
them, and writes each task's state to ``{folder}/{index}.state``. A task may wait for
tasks of other batches (an evaluation for its training, a second stage for its first):
if one of those does not complete, the task is cancelled without running, as Slurm's
``--kill-on-invalid-dep`` does.

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
from datetime import datetime
from pathlib import Path
from typing import Any

from scaling.clock import db_now, db_time
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
    unknown = set(options) - {"parallelism", "gpus"}
    if unknown:
        raise ClipscaleError(
            f"cluster: unknown key {sorted(unknown)[0]!r} for a local cluster (valid: gpus, parallelism)"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClipscaleError(f"cluster.parallelism must be a whole number of at least 1, got {value!r}")
    return value


def gpus(options: dict[str, Any]) -> list[int]:
    """The GPUs points may use here: ``cluster.gpus`` (a list of indices), or with ``auto``
    (the default) every GPU that ``nvidia-smi`` lists; none on a machine without."""
    value = options.get("gpus", "auto")
    if value == "auto":
        return _visible_gpus()
    if not isinstance(value, list) or not all(isinstance(g, int) and g >= 0 for g in value):
        raise ClipscaleError(f"cluster.gpus must be auto or a list of GPU indices, got {value!r}")
    return list(value)


def _visible_gpus() -> list[int]:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    found = [i for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # the launcher's own restriction holds for its points too
        allowed = {int(v) for v in visible.split(",") if v.strip().isdigit()}
        found = [g for g in found if g in allowed]
    return found


@dataclass(frozen=True)
class Task:
    """What the runner needs to run one task of a batch besides its pickled job."""

    ranks: int = 1  # processes
    after: tuple[tuple[str, int], ...] = ()  # (batch folder, index) that must complete first


# ---------------------------------------------------------------- launcher side


def submit(
    folder: Path, jobs: Sequence[Any], tasks: Sequence[Task], slots: Path, width: int, devices: Sequence[int]
) -> str:
    """Write the batch's jobs and start its runner; the runner's job id ``local:PID``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, job in enumerate(jobs):
        with open(folder / f"{i}.pkl.tmp", "wb") as f:
            pickle.dump(job, f)
        os.replace(folder / f"{i}.pkl.tmp", folder / f"{i}.pkl")
    batch = {"size": len(jobs), "slots": str(slots), "parallelism": width, "gpus": list(devices),
             "tasks": [{"ranks": t.ranks, "after": [list(a) for a in t.after]} for t in tasks]}  # fmt: skip
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
            for pid in _read_pids(folder, i):
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
    return LocalState(raw["state"], raw.get("node"), db_time(raw.get("started")), db_time(raw.get("ended")),
                      raw.get("reason"))  # fmt: skip


def _read_pids(folder: Path, index: int) -> list[int]:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return [int(p) for p in json.loads((folder / f"{index}.state").read_text())["pids"]]
    return []


def _write_state(folder: Path, index: int, state: str, ended: bool = False, **extra: Any) -> None:
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads((folder / f"{index}.state").read_text())
    if old.get("state") == "cancelled" and state != "cancelled":
        return  # cancelled stays cancelled
    new = {**old, **extra, "state": state, "node": socket.gethostname()}
    if ended:
        new["ended"] = db_now().isoformat(timespec="seconds")
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
def _slot(slots: Path, width: int, devices: Sequence[int], wanted: int) -> Iterator[list[int]]:
    """One of ``width`` machine-wide slots, and ``wanted`` of the machine's GPUs ``devices``
    (none on a CPU-only machine), all as lock files; waits until they are free. Yields the
    GPUs, so that points side by side never share one."""
    slots.mkdir(parents=True, exist_ok=True)
    while True:
        # Take everything or nothing, so that two tasks never wait on each other's half.
        with contextlib.ExitStack() as held:
            if any(_lock(held, slots / f"{k}.lock") for k in range(width)):
                chosen: list[int] = []
                for g in devices:
                    if len(chosen) < wanted and _lock(held, slots / f"gpu{g}.lock"):
                        chosen.append(g)
                if not devices or len(chosen) == wanted:
                    yield chosen
                    return
        time.sleep(0.5)


def _lock(stack: contextlib.ExitStack, path: Path) -> bool:
    f = open(path, "w")  # noqa: SIM115 (held by the stack)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return False
    stack.callback(f.close)
    stack.callback(fcntl.flock, f, fcntl.LOCK_UN)
    return True


def _wait_for(after: Sequence[Sequence[Any]], folder: Path, index: int) -> str | None:
    """Wait until the tasks ``after`` end; why this task must not run if one did not
    complete (or if it was cancelled meanwhile), else None."""
    while True:
        own = _read_state(folder, index)
        if own is not None and own.state == "cancelled":
            return "cancelled"
        states = [(Path(f), i, _read_state(Path(f), int(i))) for f, i in after]
        for f, i, st in states:
            if st is not None and st.state in FINAL and st.state != "completed":
                return f"its dependency {f.name}:{i} ended {st.state}: never run"
        if all(st is not None and st.state == "completed" for _, _, st in states):
            return None
        if any((st is None or st.state not in FINAL) and not _batch_alive(f) for f, _, st in states):
            return "its dependency's runner stopped before it ended: never run"
        time.sleep(0.5)


def _batch_alive(folder: Path) -> bool:
    """Whether a batch can still run: its runner is starting (nothing claimed it yet) or
    alive; not if recovery voided it or its runner is gone."""
    if not (folder / CLAIM).exists():
        return True
    pid = _runner_pid(folder)
    return pid is not None and _alive(pid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_task(folder: Path, index: int, batch: dict[str, Any]) -> None:
    spec: dict[str, Any] = batch["tasks"][index]
    why = _wait_for(spec["after"], folder, index)
    if why is not None:
        if why != "cancelled":
            _write_state(folder, index, "cancelled", ended=True, reason=why)
        return
    ranks = int(spec["ranks"])
    width = batch["parallelism"]
    with _slot(Path(batch["slots"]), width, batch.get("gpus", []), ranks) as devices:
        state = _read_state(folder, index)
        if state is not None and state.state == "cancelled":
            return
        codes = _run_ranks(folder, index, ranks, width, devices)
    failed = {r: c for r, c in codes.items() if c != 0}
    if not failed:
        _write_state(folder, index, "completed", ended=True, rc=0)
        return
    reason = "; ".join(
        f"rank {r}: " + (f"exit code {c}" if c > 0 else f"killed by signal {_signal_name(-c)}")
        for r, c in sorted(failed.items(), key=lambda rc: (rc[1] >= 0, rc[0]))  # deaths by signal first
    )
    code = failed.get(0, next(iter(failed.values())))
    _write_state(folder, index, "failed", ended=True, rc=code, reason=reason)


def _run_ranks(folder: Path, index: int, ranks: int, width: int, devices: Sequence[int]) -> dict[int, int]:
    """One process per rank with the variables torchrun would set; their exit codes."""
    env = {**os.environ, "CLIPSCALE_ATTEMPT": f"{folder.name}:{index}:{time.time_ns()}"}
    # Points side by side (and their ranks) share the cores rather than each taking them all.
    env["CLIPSCALE_CPUS"] = str(max(1, (os.cpu_count() or 1) // (width * ranks)))
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
    if ranks > 1:
        env.update(WORLD_SIZE=str(ranks), LOCAL_WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(_free_port()))  # fmt: skip
    procs = {}
    for r in range(ranks):
        name = f"{index}.log" if r == 0 else f"{index}.rank{r}.log"
        with open(folder / name, "ab") as log:
            procs[r] = subprocess.Popen(
                [sys.executable, "-m", "scaling.dispatch.local", str(folder), "--task", str(index)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)} if ranks > 1 else env,
            )  # fmt: skip
    _write_state(
        folder,
        index,
        "running",
        pids=[p.pid for p in procs.values()],
        started=db_now().isoformat(timespec="seconds"),
    )
    return {r: p.wait() for r, p in procs.items()}


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)


def runner(folder: Path) -> int:
    if not _claim(folder):
        return 0  # recovery voided this batch: its launcher died before recording it
    batch = json.loads((folder / "batch.json").read_text())
    tasks: queue.Queue[int] = queue.Queue()
    for i in range(batch["size"]):
        tasks.put(i)

    def work() -> None:
        while True:
            try:
                i = tasks.get_nowait()
            except queue.Empty:
                return
            _run_task(folder, i, batch)
            # A pause before the next task: runners waiting for a slot (an evaluation whose
            # training just ended) get the one freed, rather than every slot going to training.
            time.sleep(1.0)

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
