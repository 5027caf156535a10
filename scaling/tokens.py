"""How many image and text tokens a point trains on (CLIPA's axes), from its resolved config.

CLIPA ("An Inverse Scaling Law for CLIP Training", Li et al. 2023) names a pre-training by
its token counts: ``I50`` for 112 px images in 16 px patches is 7×7 patches plus the class
token, ``T16`` for 16 text tokens. Random patch dropout keeps a share of the patches. A
second stage (the full-size fine-tune) is placed at its first stage's counts, which is what
CLIPA's figure does. No torch here: a built-in model's config is read from open_clip's
package files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _model_config(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    found = config.get("model_config")
    if isinstance(found, Mapping):
        return found
    from scaling.config import builtin_config  # a built-in model: open_clip's own JSON

    return builtin_config(str(config.get("model", "")))


def image_tokens(config: Mapping[str, Any]) -> int | None:
    """Image tokens per sample of a point's training: patches kept, plus the class token."""
    model, train = _model_config(config), config.get("train") or {}
    vision = model.get("vision_cfg") if model else None
    if not isinstance(vision, Mapping) or not vision.get("patch_size"):
        return None
    size = train.get("image_size") or vision.get("image_size")
    if not size:
        return None
    side = int(size) // int(vision["patch_size"])
    kept = round(side * side * (1.0 - float(train.get("patch_dropout") or 0.0)))
    return int(kept) + 1


def text_tokens(config: Mapping[str, Any]) -> int | None:
    """Text tokens per sample of a point's training: its context length."""
    model, train = _model_config(config), config.get("train") or {}
    text = model.get("text_cfg") if model else None
    length = train.get("context_length") or (
        text.get("context_length") if isinstance(text, Mapping) else None
    )
    return int(length) if length else None


def reduced(config: Mapping[str, Any]) -> bool:
    """Whether a point trains at tokens other than its model's own, or is a second stage:
    what makes a sweep a CLIPA sweep."""
    train = config.get("train") or {}
    return (config.get("stage") or 1) > 1 or any(
        train.get(k) is not None for k in ("image_size", "context_length", "patch_dropout")
    )
