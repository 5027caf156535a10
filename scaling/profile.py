"""Count forward MACs per sample (and parameters) of an open_clip model on the meta device
(imports torch).

The model is built on torch's meta device, so no weights are allocated and even bigG
counts in about a second. torch's FlopCounterMode counts 2 FLOPs per multiply-accumulate
of matmuls, convolutions and attention; halving gives MACs, which match the fvcore counts
of the scaling-laws paper within 0.2 % for its architectures.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from scaling.config import ModelSpec
from scaling.errors import ClipscaleError
from scaling.registry import register_models


def count_macs(
    model: ModelSpec,
    image_size: int | None = None,
    context_length: int | None = None,
    patch_dropout: float | None = None,
) -> tuple[float, float, float, float]:
    """(image, text, decoder) forward MACs for one sample, honouring CLIPA's token
    reductions, and the model's parameters (what a checkpoint holds). The decoder is what
    the training forward computes beyond the two towers: CoCa's captioning decoder and its
    projection onto the vocabulary; nothing for CLIP and SigLIP."""
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
    try:
        # Build on meta (no allocation, no weight init) and keep it there.
        with torch.device("meta"), _quiet_root_logger():
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
    # The text tower's length (CoCa's model-level length is its decoder's).
    length = getattr(getattr(net, "text", None), "context_length", None) or net.context_length
    text = torch.zeros(1, length, dtype=torch.long, device="meta")
    # Training mode: patch dropout removes tokens only while training, and training is
    # what the compute axis measures.
    net.train()
    params = float(sum(p.numel() for p in net.parameters()))
    with torch.no_grad():
        image_macs, text_macs = _macs(lambda: net.encode_image(image)), _macs(lambda: net.encode_text(text))
        whole = _macs(lambda: net(image, text))
    return image_macs, text_macs, max(0.0, whole - image_macs - text_macs), params


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """open_clip logs with the root logger: it warns that no weights were loaded (the point
    here), and its first message would call logging.basicConfig, binding a handler to the
    stderr of that moment for the rest of the process (a trainer run later would then log
    to the console even when quiet). Nothing of that outlives the count."""
    root = logging.getLogger()
    level, idle = root.level, logging.NullHandler()
    root.setLevel(max(level, logging.ERROR))
    root.addHandler(idle)  # a root with a handler is never basicConfig'ed
    try:
        yield
    finally:
        root.removeHandler(idle)
        root.setLevel(level)


def _macs(forward: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        forward()
    return counter.get_total_flops() / 2
