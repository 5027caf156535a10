"""Model types as a sweep axis: what CLIP, SigLIP and CoCa change in a run (no torch here).

open_clip 3.3.0 trains all three with one trainer:
- ``clip``: the contrastive (softmax) loss; nothing to add.
- ``siglip``: the sigmoid loss (``--siglip``), for which the trainer builds the model with a
  learnt logit bias (``init_logit_bias=-10``): an evaluation must build it the same way, or
  the checkpoint's ``logit_bias`` has no parameter to load into.
- ``coca``: a text decoder on top (captioning loss plus contrastive loss). open_clip picks
  CoCa's loss by the model's *name* (``"coca" in --model``) and builds CoCa from a config with
  ``multimodal_cfg``, so a CoCa point trains ``coca_<model>``, its config derived from the
  CLIP model's the way open_clip's own ``coca_ViT-B-32`` derives from ``ViT-B-32``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MODEL_TYPES = ("clip", "siglip", "coca")
COCA_PREFIX = "coca_"
# What the SigLIP trainer initialises the logit bias to (open_clip_train.main).
SIGLIP_LOGIT_BIAS = -10.0


def model_name(model: str, model_type: str) -> str:
    """The open_clip model a point of this type trains: CoCa's carries its prefix."""
    if model_type == "coca" and not model.startswith(COCA_PREFIX):
        return COCA_PREFIX + model
    return model


def trained_type(model: str, model_type: str | None = None) -> str:
    """What a run trained: CoCa wherever its model's name says so (open_clip picks CoCa's loss
    by the name), else its ``model_type`` setting, else what the name says (a published
    checkpoint: ``ViT-SO400M-14-SigLIP``); a name that says nothing is CLIP's."""
    lower = model.lower()
    if "coca" in lower:
        return "coca"
    if model_type:
        return model_type
    return "siglip" if "siglip" in lower else "clip"


def coca_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A CLIP model's open_clip config turned CoCa: an attentional pool on the image tower,
    a class token on the text tower, both returning their tokens, and a multimodal decoder as
    wide and deep as the text tower (as open_clip's coca_ViT-B-32 is to ViT-B-32)."""
    out = copy.deepcopy(dict(config))
    vision, text = dict(out["vision_cfg"]), dict(out["text_cfg"])
    vision.update(attentional_pool=True, output_tokens=True)
    text.update(embed_cls=True, output_tokens=True)
    width = int(text.get("width", 512))
    heads = int(text.get("heads", max(1, width // 64)))
    out["vision_cfg"], out["text_cfg"] = vision, text
    out["multimodal_cfg"] = {
        "context_length": text.get("context_length", 77),
        "vocab_size": text.get("vocab_size", 49408),
        "width": width,
        "heads": heads,
        "layers": text.get("layers", 12),
        "attn_pooler_heads": heads,
    }
    out["custom_text"] = True
    return out


def trainer_args(model_type: str, caption_weight: float, contrastive_weight: float) -> list[str]:
    """open_clip_train flags of a model type; CoCa's loss weights are always given, so a
    change of open_clip's defaults never changes what a point trains."""
    if model_type == "siglip":
        return ["--siglip"]
    if model_type == "coca":
        return ["--coca-caption-loss-weight", repr(caption_weight),
                "--coca-contrastive-loss-weight", repr(contrastive_weight)]  # fmt: skip
    return []


def model_kwargs(model_type: str) -> dict[str, Any]:
    """``open_clip.create_model`` arguments that rebuild a trained model of this type."""
    return {"init_logit_bias": SIGLIP_LOGIT_BIAS} if model_type == "siglip" else {}
