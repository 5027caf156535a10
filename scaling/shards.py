"""Checks of a point's training shards before any GPU time is spent on them: every shard is
there and not empty, and a small local data set is decoded whole, once per version."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tarfile
from pathlib import Path

from scaling.errors import ClipscaleError
from scaling.files import write_atomic

_FULL_CHECK_BYTES = 2 << 30  # data sets up to this size have every sample decoded first


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
        # Decoded once per version of the shards: every job of a sweep (a trajectory has one
        # per segment and branch) would otherwise decode the same data set again.
        seal = _seal(paths)
        if not seal.exists():
            for path in paths:
                _check_samples(path)
            with contextlib.suppress(OSError):  # an unwritable cache only costs the next check
                write_atomic(seal, "")
    return paths


def _seal(paths: list[Path]) -> Path:
    """The cache's mark that these shards, as they are now (size, modification time), were
    decoded whole without a fault."""
    from scaling.compute import cache_dir

    stats = [(str(p.resolve()), s.st_size, s.st_mtime_ns) for p in paths for s in [p.stat()]]
    digest = hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    return cache_dir() / "checked-shards" / digest


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
