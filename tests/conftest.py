"""Shared fixtures: an isolated MAC cache, the shared reference data, user sweep files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

# What the reliability suite (tests/reliability/) tried, printed at the end of every run:
# faults injected, bad inputs tried, rows lost. Tests add to it with reliability_count.
_RELIABILITY: dict[str, int] = {}


def reliability_count(what: str, n: int = 1) -> None:
    """Adds n to one of the reliability suite's printed counts ("bad inputs tried", ...)."""
    _RELIABILITY[what] = _RELIABILITY.get(what, 0) + n


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _RELIABILITY:
        terminalreporter.section("reliability")
        for what, n in _RELIABILITY.items():
            terminalreporter.write_line(f"{what}: {n:,}")


SHARED = REPO.parent / "shared" / "reference" / "laion-scaling-laws-openclip"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Tests count MACs into their own cache, never the user's ~/.cache.
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("CLIPSCALE_CACHE_DIR")
    os.environ["CLIPSCALE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("CLIPSCALE_CACHE_DIR", None)
    else:
        os.environ["CLIPSCALE_CACHE_DIR"] = old


@pytest.fixture
def shared() -> Path:
    """The paper's published tables; tests that need them skip where they are absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared reference data is not present")
    return SHARED


@pytest.fixture
def write_sweep(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a user sweep file (YAML text, dedented) and return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / "sweeps" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write


MINI_SWEEP = """\
defaults:
  - gpu: a100
  - cluster: local
  - _self_
name: mini
model: [toy-s, toy-m]
data: [toy-4k]
samples_seen: [4k, 16k]
train:
  lr: 1.0e-3
  warmup: 5
  batch_size: 32
  gpus: 1
  workers: 2
  precision: fp32
"""


# The tiny sweep the dispatch tests launch: toy-xs on toy-1k, evaluated on one set; with
# cluster=slurm, CPU-only one-task jobs in arrays of at most 2 on the dev cluster.
DISPATCH_SWEEP = """\
defaults:
  - gpu: a100
  - cluster: {cluster}
  - _self_
name: {name}
data_root: {root}
runs_root: {runs}
eval:
  root: {root}/toy/eval
  sets:
    - {{name: toy_shapes, task: zeroshot_classification}}
model: [toy-xs]
data: [toy-1k]
samples_seen: [{samples}]
train: {{lr: 2.0e-3, warmup: 2, batch_size: 32, gpus: 1, workers: 1, precision: fp32, epochs: 2, seed: 0}}
clusters:
  slurm: {{gpus_per_node: 0, cpus_per_gpu: 1, mem_gb_per_gpu: 1, time_limit_min: 60, signal_delay_s: 30,
          max_array_size: 2}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy world's smallest training set and the evaluation sets, once per module."""
    from scaling import toyworld

    root = tmp_path_factory.mktemp("world")
    toyworld.write_world(root, {"toy-1k": 1000})
    return root


def wait_done(p: Any, engine: Any, timeout_s: float = 300) -> Any:
    """Reconcile a launched sweep until no job of it is pending or running; the summary."""
    from scaling.dispatch import reconcile

    deadline = time.monotonic() + timeout_s
    while (summary := reconcile(p, engine)).active:
        assert time.monotonic() < deadline, summary
        time.sleep(1)
    return summary


def assert_failed_at_the_next_collective(directory: Path, seen: int | None, planned: int) -> None:
    """Rank 0 saw its killed peer go at its next collective (gloo's broken connection), far
    from the run's end: not at the collective timeout, nor at a time limit."""
    rank0 = json.loads((directory / "ranks" / "0.json").read_text())
    assert rank0["state"] == "failed" and "gloo" in rank0["error"], rank0
    assert "timed out" not in rank0["error"].lower(), rank0
    assert (seen or 0) < planned // 2, seen


def dispatch_sweep(
    tmp: Path, world: Path, name: str, cluster: str = "local", samples: str = "256, 384"
) -> Path:
    """Write DISPATCH_SWEEP as ``{tmp}/{name}.yaml``, runs under ``{tmp}/runs``."""
    path = tmp / f"{name}.yaml"
    path.write_text(
        DISPATCH_SWEEP.format(cluster=cluster, name=name, root=world, runs=tmp / "runs", samples=samples)
    )
    return path


# The toy grid several modules share (tests/test_suggest.py, tests/test_evaluations.py): toy-s
# on toy-16k (seen at most 2.5 times) at 10k, 14k and 20k samples, evaluated zero-shot, by
# full and k-shot linear probes and by fine-tuning; two points at a time, one core each.
# Batch 64 at lr 2e-3 leaves chance by 10k samples.
TOY_GRID = """\
defaults:
  - gpu: cpu
  - cluster: local
  - _self_
name: next
data_root: {root}
runs_root: {runs}
eval:
  root: {root}/toy/eval
  sets:
    - {{name: toy_shapes, task: zeroshot_classification}}
    - {{name: toy_shapes, task: linear_probe, shots: [1, 10], seeds: 3}}
    - {{name: toy_shapes, task: finetune, epochs: 1, lr: 1.0e-3, shifted: [toy_shapes_shifted]}}
model: [toy-s]
data: [toy-16k]
samples_seen: [10k, 14k, 20k]
clusters:
  local: {{parallelism: 2}}
train: {{lr: 2.0e-3, warmup: 10, batch_size: 64, gpus: 1, workers: 1, precision: fp32, seed: 0}}
"""


def trained_sweep(tmp: Path, name: str, template: str, points: int) -> Path:
    """A toy sweep trained for real: toy-16k written under ``tmp/world``, the sweep
    ``tmp/{name}.yaml`` from ``template`` (``{root}``, ``{runs}``), launched on this machine
    and ingested into ``tmp/results.db``; all ``points`` must succeed. Returns ``tmp``."""
    from scaling import toyworld
    from scaling.dispatch import launch
    from scaling.plan import plan
    from scaling.store import connect

    toyworld.write_world(tmp / "world", {"toy-16k": 16000})
    (tmp / f"{name}.yaml").write_text(template.format(root=tmp / "world", runs=tmp / "runs"))
    p = plan(str(tmp / f"{name}.yaml"))
    engine = connect(f"sqlite:///{tmp / 'results.db'}")
    launch(p, engine)
    assert wait_done(p, engine, timeout_s=900).counts == {"succeeded": points}
    engine.dispose()
    return tmp


@pytest.fixture(scope="session")
def toy_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TOY_GRID's three points trained, evaluated and ingested (sweep ``next.yaml`` and
    ``results.db`` in the returned directory). tests/test_suggest.py runs a fourth."""
    return trained_sweep(tmp_path_factory.mktemp("next"), "next", TOY_GRID, 3)


# ---------------------------------------------------------------- the one-node dev Slurm

SLURM_SCRIPT = REPO / "launchers" / "slurm-dev-cluster.sh"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """The dev cluster: reused if one is up, else started here and stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the one-node Slurm needs root (launchers/slurm-dev-cluster.sh)")
    if subprocess.run([str(SLURM_SCRIPT), "status"], capture_output=True).returncode == 0:
        yield _node()
        return
    up = subprocess.run([str(SLURM_SCRIPT), "up"], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        yield _node()
    finally:
        subprocess.run([str(SLURM_SCRIPT), "down"], capture_output=True, timeout=120)


def _node() -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()[0]


def slurm_sweep(tmp: Path, world: Path, name: str) -> Path:
    return dispatch_sweep(tmp, world, name, cluster="slurm", samples="256, 384, 512")


def slurm_cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scaling.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def queued(names: set[str]) -> list[tuple[str, str, str]]:
    """(task id, job name, reason) of every queued task of these job names."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%j|%r"], capture_output=True, text=True, check=True)
    rows = [tuple(line.split("|")) for line in out.stdout.splitlines() if line.strip()]
    return [r for r in rows if r[1] in names]  # type: ignore[misc]


def env_for(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CLIPSCALE_CACHE_DIR": str(tmp / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/ml.db",
    }


@pytest.fixture()
def drained(slurm_cluster: str) -> Iterator[None]:
    """The node takes no jobs, so submitted tasks stay queued while we count them."""
    subprocess.run(
        ["scontrol", "update", f"NodeName={slurm_cluster}", "State=DRAIN", "Reason=kill-test"], check=True
    )
    try:
        yield
    finally:
        subprocess.run(["scontrol", "update", f"NodeName={slurm_cluster}", "State=RESUME"], check=True)


# ---------------------------------------------------------------- a throwaway PostgreSQL

POSTGRES_SCRIPT = REPO / "launchers" / "postgres-dev.sh"


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server started by the project's own script, stopped by PID after."""
    # Not under pytest's private temp dir: the server runs as the postgres user.
    directory = Path(tempfile.mkdtemp(prefix="clipscale-pg.", dir="/tmp"))
    up = subprocess.run(
        ["bash", str(POSTGRES_SCRIPT), "up", str(directory)], capture_output=True, text=True, timeout=300
    )
    if up.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL did not start: {up.stderr.strip()}")
        pytest.skip(f"PostgreSQL did not start here: {up.stderr.strip()[-200:]}")
    url = up.stdout.strip().splitlines()[-1]
    yield url
    subprocess.run(["bash", str(POSTGRES_SCRIPT), "down", str(directory)], capture_output=True, timeout=120)


# A store on each backend: SQLite in the test's folder, a fresh database on the PostgreSQL.
@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    import uuid

    import sqlalchemy as sa

    server = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return str(sa.make_url(server).set(database=name).render_as_string(hide_password=False))
