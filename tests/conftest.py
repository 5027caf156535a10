"""Shared fixtures: an isolated MAC cache, the shared reference data, user sweep files."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
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
