"""Count forward MACs per sample of an open_clip model on the meta device (imports torch).

The model is built on torch's meta device, so no weights are allocated and even bigG
counts in about a second. torch's FlopCounterMode counts 2 FLOPs per multiply-accumulate
of matmuls, convolutions and attention; halving gives MACs, which match the fvcore counts
of the scaling-laws paper within 0.2 % for its architectures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from scaling.config import ModelSpec
from scaling.errors import ClipscaleError
from scaling.registry import register_models


def count_macs(
    model: ModelSpec,
    image_size: int | None = None,
    context_length: int | None = None,
    patch_dropout: float | None = None,
) -> tuple[float, float]:
    """(image, text) forward MACs for one sample, honouring CLIPA's token reductions."""
    try:
        import open_clip
        import torch
    except ImportError as e:
        raise ClipscaleError(
            f"counting the MACs of {model.name} needs torch and open_clip: "
            f"pip install 'clipscale[train]' ({e})"
        ) from None

    register_models([model])
    if model.name not in open_clip.list_models():
        raise ClipscaleError(f"open_clip does not know model {model.name!r}")
    # open_clip warns that no weights were loaded: that is the point here.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    try:
        # Build on meta (no allocation, no weight init) and keep it there.
        with torch.device("meta"):
            net = open_clip.create_model(
                model.name,
                pretrained=None,
                load_weights=False,
                device="meta",
                force_image_size=image_size,
                force_context_length=context_length,
                force_patch_dropout=patch_dropout,
            )
    except Exception as e:  # any construction error is a problem with the config
        raise ClipscaleError(f"cannot build model {model.name!r}: {e}") from None
    size = net.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    image = torch.empty(1, 3, height, width, device="meta")
    text = torch.zeros(1, net.context_length, dtype=torch.long, device="meta")
    # Training mode: patch dropout removes tokens only while training, and training is
    # what the compute axis measures.
    net.train()
    with torch.no_grad():
        return _macs(lambda: net.encode_image(image)), _macs(lambda: net.encode_text(text))


def _macs(forward: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        forward()
    return counter.get_total_flops() / 2
