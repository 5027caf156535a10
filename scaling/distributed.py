"""The ranks of one training run: who this process is, how many threads it may use, what
clipscale changes in the trainer's distributed set-up, and what each rank leaves behind.

A rank is found from the environment its launcher made: a Slurm task (srun, through
submitit's ``TorchDistributedEnvironment``) or a process started by the local runner
(``RANK``/``WORLD_SIZE``/``MASTER_ADDR``, as torchrun sets them). open_clip reads the same
variables itself. Two changes to how the trainer runs, both scoped to its call:

- on CPU, ``DistributedDataParallel`` is built without ``device_ids``, which torch refuses
  for a CPU module (open_clip always passes them); GPUs are untouched;
- the process group gets the sweep's ``train.dist_timeout_min``, so a rank whose peer died
  or hangs fails within minutes instead of torch's default half hour.

Every rank records its start and end in ``ranks/{rank}.json``; a run that fails is
reported by rank 0 with the cause of the rank that failed first (a peer killed without a
word, or one whose error came before rank 0's own), and that rank's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from scaling.clock import stamp
from scaling.files import write_atomic

RANKS_DIR = "ranks"
PEER_WAIT_S = 20.0  # how long rank 0 waits for its peers' own account of a failure


@dataclass(frozen=True)
class Rank:
    rank: int
    local_rank: int
    world: int
    attempt: str  # the same for every rank of one attempt, new for the next


def this_rank() -> Rank:
    """This process's rank, exporting torch.distributed's variables from a Slurm job with
    several tasks (every GPU of the node stays visible: open_clip picks ``cuda:LOCAL_RANK``)."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return Rank(rank, local, world, _attempt())


def _attempt() -> str:
    if os.environ.get("CLIPSCALE_ATTEMPT"):  # the local runner's
        return os.environ["CLIPSCALE_ATTEMPT"]
    if os.environ.get("SLURM_JOB_ID"):  # a requeued job keeps its id: count its restarts
        return f"{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    return f"{socket.gethostname()}.{os.getpid()}"


def cpus() -> int:
    """The CPUs this rank may use: its share under the local runner (even inside a Slurm
    allocation), its Slurm task's, or those this process may run on."""
    for name in ("CLIPSCALE_CPUS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(name, "").isdigit():
            return max(1, int(os.environ[name]))
    return len(os.sched_getaffinity(0))


def set_threads(workers: int) -> int:
    """Intra-op threads for this rank: its CPUs less one per data-loader worker (each
    worker runs one thread), at least one. Set before torch starts its pools."""
    threads = max(1, cpus() - workers)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def trainer_patches(device: str, timeout_min: float) -> Iterator[None]:
    """The two changes to the trainer's distributed set-up (see the module's docstring)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    class CpuDDP(DistributedDataParallel):
        def __init__(self, module: Any, device_ids: Any = None, **kwargs: Any) -> None:
            if all(p.device.type == "cpu" for p in module.parameters()):
                device_ids = None  # torch: "device_ids ... must be None ... for CPU modules"
            super().__init__(module, device_ids=device_ids, **kwargs)

    init = dist.init_process_group

    def init_with_timeout(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timedelta(minutes=timeout_min))
        return init(*args, **kwargs)

    saved = torch.nn.parallel.DistributedDataParallel
    dist.init_process_group = init_with_timeout
    if device == "cpu":
        torch.nn.parallel.DistributedDataParallel = CpuDDP  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        dist.init_process_group = init
        torch.nn.parallel.DistributedDataParallel = saved  # type: ignore[misc]


def leave() -> None:
    """Leave the process group, so peers blocked in a collective with this rank fail now
    rather than at the timeout (open_clip never destroys it)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


# ---------------------------------------------------------------- what each rank leaves


def now() -> str:
    return stamp("milliseconds")


class RankRecord:
    """``ranks/{rank}.json`` of one rank: written at its start and at its end."""

    def __init__(self, run_dir: Path, rank: Rank, log: Path) -> None:
        self.path = run_dir / RANKS_DIR / f"{rank.rank}.json"
        self.data: dict[str, Any] = {
            "rank": rank.rank, "world": rank.world, "attempt": rank.attempt, "host": socket.gethostname(),
            "pid": os.getpid(), "log": str(log), "state": "running", "started": now(),
        }  # fmt: skip

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(self.data) + "\n")

    def end(self, error: str | None, exc: BaseException | None = None) -> None:
        self.data.update(state="failed" if error else "done", ended=now(), error=error)
        if exc is not None:
            self.data["traceback"] = traceback.format_exception(exc)[-8:]
        write_atomic(self.path, json.dumps(self.data) + "\n")


def peers(run_dir: Path, rank: Rank) -> list[dict[str, Any]]:
    """The records of this attempt's other ranks."""
    out = []
    for r in range(rank.world):
        if r == rank.rank:
            continue
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((run_dir / RANKS_DIR / f"{r}.json").read_text())
            if data.get("attempt") == rank.attempt:
                out.append(data)
    return out


def first_failure(
    run_dir: Path, rank: Rank, failed_at: str, wait_s: float = PEER_WAIT_S
) -> dict[str, Any] | None:
    """After this rank failed (at ``failed_at``): the peer that failed before it, if one
    did; None if this rank's own failure came first. A peer that died without a word
    (killed; knowable on this host) is the likeliest cause; else the earliest error
    recorded before ours. Waits up to ``wait_s`` for peers still running to say how they
    ended (a peer still blocked in a collective with us says nothing: ours came first)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = peers(run_dir, rank)
        silent = [p for p in found if p.get("state") == "running" and _gone(p)]
        if silent:
            return {**silent[0], "error": _silent(silent[0])}
        running = [p for p in found if p.get("state") == "running"]
        if not running or time.monotonic() > deadline:
            earlier = [p for p in found if p.get("state") == "failed" and p.get("ended", "") < failed_at]
            return min(earlier, key=lambda p: p["ended"]) if earlier else None
        time.sleep(0.5)


def _gone(peer: dict[str, Any]) -> bool:
    """Whether a peer's process is gone; only knowable on this host."""
    if peer.get("host") != socket.gethostname():
        return False
    pid = int(peer.get("pid", 0))
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _silent(peer: dict[str, Any]) -> str:
    return (
        f"died without recording an error (pid {peer['pid']} on {peer['host']}): killed by a signal "
        "(SIGKILL, the out-of-memory killer) or a crash"
    )


def log_tail(path: str | Path, lines: int = 20) -> list[str]:
    try:
        return Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []
