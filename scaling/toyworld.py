"""A synthetic image-caption world where real CLIP training shows a real scaling law.

Images are coloured shapes (8 colours x 6 shapes = 48 classes) of varying size and
position on textured backgrounds; captions describe them from several templates, often
leaving attributes out, so a model must learn colour, shape, size and position words
from co-occurrence alone. Training sets are webdataset shards in img2dataset's layout
(``{key}.jpg``, ``{key}.txt``, ``{key}.json``, one ``sizes.json``); evaluation sets are in
CLIP_benchmark's webdataset layout (``classnames.txt``,
``zeroshot_classification_templates.txt``, ``dataset_type.txt``, ``{split}/nshards.txt``,
``{split}/{i}.tar``). Every sample depends only on (seed, stream, index), so data sets of
different sizes are nested prefixes of one stream and any shard can be made alone.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from scaling.files import atomic_file, write_atomic

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
SIZES = {"small": (0.18, 0.26), "medium": (0.28, 0.36), "large": (0.38, 0.46)}
POSITIONS = {
    "left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7), "centre": (0.5, 0.5),
}  # fmt: skip
# In-distribution backgrounds; the shifted set uses others, plus noise and odd scales.
BACKGROUNDS = {
    "grey": (128, 128, 128), "teal": (40, 110, 110), "beige": (200, 185, 150), "navy": (30, 35, 80),
}  # fmt: skip
SHIFTED_BACKGROUNDS = {"pink": (230, 150, 180), "olive": (110, 110, 40), "brown": (100, 60, 30)}
TEXTURES = ("plain", "stripes", "dots")
TEMPLATES = (
    "a {size} {colour} {shape} on a {background} background",
    "a {colour} {shape}",
    "a photo of a {shape} that is {colour}",
    "{colour} {shape}, {size}, at the {position}",
    "there is a {size} {shape} at the {position}; it is {colour}",
    "a {shape} coloured {colour} with {texture} {background} behind it",
    "a {colour} {size} {shape}",
    "the {shape} is {colour} and sits at the {position}",
)
ZEROSHOT_TEMPLATES = ("a {c}.", "a photo of a {c}.", "a {c} on a background.")
CLASSES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
SHARD_SIZE = 1000

# Streams keep training data and each evaluation set independent of each other.
STREAM_TRAIN, STREAM_CLS_TRAIN, STREAM_CLS_TEST, STREAM_SHIFTED, STREAM_RETRIEVAL = range(5)


@dataclass(frozen=True)
class Sample:
    key: str
    image: bytes
    caption: str
    label: int
    attributes: dict[str, str]


def _sample(seed: int, stream: int, index: int, size: int, shifted: bool = False) -> Sample:
    rng = np.random.default_rng([seed, stream, index])
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    size_name = str(rng.choice(list(SIZES)))
    position = str(rng.choice(list(POSITIONS)))
    backgrounds = SHIFTED_BACKGROUNDS if shifted else BACKGROUNDS
    background = str(rng.choice(list(backgrounds)))
    texture = str(rng.choice(TEXTURES))
    scale = rng.uniform(*SIZES[size_name])
    if shifted:  # unseen scales as part of the distribution shift
        scale *= float(rng.choice([0.7, 1.3]))
    image = _render(
        rng, size, COLOURS[colour], shape, scale, POSITIONS[position], backgrounds[background], texture
    )
    if shifted:
        image = np.clip(image + rng.normal(0, 28, image.shape), 0, 255)
    attributes = {"colour": colour, "shape": shape, "size": size_name, "position": position,
                  "background": background, "texture": texture}  # fmt: skip
    caption = re.sub(r"\ba (?=[aeiou])", "an ", str(rng.choice(TEMPLATES)).format(**attributes))
    return Sample(
        key=f"{index:09d}",
        image=_jpeg(image),
        caption=caption,
        label=CLASSES.index(f"{colour} {shape}"),
        attributes=attributes,
    )


def _render(
    rng: np.random.Generator,
    size: int,
    colour: tuple[int, int, int],
    shape: str,
    scale: float,
    centre: tuple[float, float],
    background: tuple[int, int, int],
    texture: str,
) -> np.ndarray:
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    cx, cy = (c + rng.uniform(-0.08, 0.08) for c in centre)
    r = scale / 2
    dx, dy = x - cx, y - cy
    masks = {
        "circle": dx**2 + dy**2 <= r**2,
        "ring": (dx**2 + dy**2 <= r**2) & (dx**2 + dy**2 >= (0.55 * r) ** 2),
        "square": (abs(dx) <= r * 0.85) & (abs(dy) <= r * 0.85),
        "diamond": abs(dx) + abs(dy) <= r,
        "triangle": (dy <= r * 0.8) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6),
        "cross": ((abs(dx) <= r * 0.3) & (abs(dy) <= r)) | ((abs(dy) <= r * 0.3) & (abs(dx) <= r)),
    }
    image = np.empty((size, size, 3))
    image[:] = np.array(background) + rng.normal(0, 8, 3)
    if texture == "stripes":
        image[(np.floor(y * size / 3) % 2).astype(bool)] *= 0.8
    elif texture == "dots":
        image[rng.random((size, size)) < 0.08] *= 1.3
    jitter = rng.normal(0, 12, 3)
    image[masks[shape]] = np.clip(np.array(colour) + jitter, 0, 255)
    return np.clip(image, 0, 255)


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# ---------------------------------------------------------------- tar shards


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed metadata: the same samples make byte-identical shards on any machine.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, members: Iterator[tuple[str, bytes]]) -> None:
    """Write a tar atomically: readers never see a half-written shard."""
    with atomic_file(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            _add(tar, name, data)


def write_training_set(root: Path, num_samples: int, seed: int = 0, image_size: int = 32) -> Path:
    """``num_samples`` pairs as img2dataset-style shards of 1,000 under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for shard in range(-(-num_samples // SHARD_SIZE)):
        indices = range(shard * SHARD_SIZE, min(num_samples, (shard + 1) * SHARD_SIZE))
        name = f"{shard:05d}.tar"
        _write_tar(root / name, _training_members(seed, indices, image_size))
        sizes[name] = len(indices)
    write_atomic(root / "sizes.json", json.dumps(sizes, indent=1) + "\n")
    return root


def _training_members(seed: int, indices: range, image_size: int) -> Iterator[tuple[str, bytes]]:
    for i in indices:
        s = _sample(seed, STREAM_TRAIN, i, image_size)
        meta = {"key": s.key, "caption": s.caption, "url": None, "status": "success",
                "width": image_size, "height": image_size, **s.attributes}  # fmt: skip
        yield f"{s.key}.jpg", s.image
        yield f"{s.key}.txt", s.caption.encode()
        yield f"{s.key}.json", json.dumps(meta, sort_keys=True).encode()


def _write_split(root: Path, split: str, samples: list[Sample], retrieval: bool) -> None:
    directory = root / split
    directory.mkdir(parents=True, exist_ok=True)
    chunks = [samples[i : i + SHARD_SIZE] for i in range(0, len(samples), SHARD_SIZE)]
    for n, chunk in enumerate(chunks):
        _write_tar(directory / f"{n}.tar", _eval_members(chunk, retrieval))
    write_atomic(directory / "nshards.txt", f"{len(chunks)}\n")


def _eval_members(samples: list[Sample], retrieval: bool) -> Iterator[tuple[str, bytes]]:
    for s in samples:
        yield f"{s.key}.jpg", s.image
        yield (f"{s.key}.txt", s.caption.encode()) if retrieval else (f"{s.key}.cls", str(s.label).encode())


def write_classification_set(
    root: Path,
    stream: int,
    test: int,
    train: int = 0,
    seed: int = 0,
    image_size: int = 32,
    shifted: bool = False,
) -> Path:
    """A zero-shot classification set (and a linear-probe train split if ``train``)."""
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / "classnames.txt", "\n".join(CLASSES) + "\n")
    write_atomic(root / "zeroshot_classification_templates.txt", "\n".join(ZEROSHOT_TEMPLATES) + "\n")
    write_atomic(root / "dataset_type.txt", "classification\n")
    _write_split(root, "test", [_sample(seed, stream, i, image_size, shifted) for i in range(test)], False)
    if train:
        base = STREAM_CLS_TRAIN
        _write_split(root, "train", [_sample(seed, base, i, image_size) for i in range(train)], False)
    return root


def write_retrieval_set(root: Path, size: int, seed: int = 0, image_size: int = 32) -> Path:
    """An image-caption retrieval set: one caption per image, several templates."""
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / "dataset_type.txt", "retrieval\n")
    samples = [_sample(seed, STREAM_RETRIEVAL, i, image_size) for i in range(size)]
    _write_split(root, "test", samples, True)
    return root


# Names of the evaluation sets, as sweeps refer to them.
EVAL_SETS = ("toy_shapes", "toy_shapes_shifted", "toy_captions")


def write_eval_sets(
    root: Path, seed: int = 0, image_size: int = 32, test: int = 960, train: int = 1920
) -> Path:
    """The toy analogues of ImageNet, its shifted variants and MS-COCO, under ``root``."""
    write_classification_set(root / "toy_shapes", STREAM_CLS_TEST, test, train, seed, image_size)
    write_classification_set(
        root / "toy_shapes_shifted", STREAM_SHIFTED, test, 0, seed, image_size, shifted=True
    )
    write_retrieval_set(root / "toy_captions", test // 2, seed, image_size)
    return root


def write_world(
    root: Path, sizes: dict[str, int], seed: int = 0, image_size: int = 32, force: bool = False
) -> list[Path]:
    """Training sets ``{root}/toy/{name}`` of the given sizes and the evaluation sets
    ``{root}/toy/eval``; a set already written with the same size and seed is kept."""
    written = []
    for name, count in sizes.items():
        target = root / "toy" / name
        if force or not _is_complete(target, {"samples": count, "seed": seed, "image_size": image_size}):
            write_training_set(target, count, seed, image_size)
            _mark(target, {"samples": count, "seed": seed, "image_size": image_size})
        written.append(target)
    evals = root / "toy" / "eval"
    if force or not _is_complete(evals, {"seed": seed, "image_size": image_size}):
        write_eval_sets(evals, seed, image_size)
        _mark(evals, {"seed": seed, "image_size": image_size})
    return [*written, evals]


_MARK = ".toyworld.json"


def _is_complete(directory: Path, spec: dict[str, int]) -> bool:
    # Written last, so its presence means everything before it was written whole.
    try:
        return json.loads((directory / _MARK).read_text()) == spec
    except (OSError, ValueError):
        return False


def _mark(directory: Path, spec: dict[str, int]) -> None:
    write_atomic(directory / _MARK, json.dumps(spec, sort_keys=True) + "\n")
