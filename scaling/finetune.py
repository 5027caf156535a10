"""Fine-tuning as an evaluation: the image tower and a classification head trained end to end
on a classification set's train split, then scored on its test split and on shifted sets of
the same classes (the paper fine-tunes on ImageNet and reports its distribution shifts).

The head starts as the zero-shot classifier (the class names under the set's templates,
encoded by the text tower, scaled by the model's logit scale), so fine-tuning starts from
zero-shot accuracy rather than chance, as in the paper and WiSE-FT. AdamW (weight decay 0.1)
at ``lr`` after a 20-step warm-up, held through the first pass and then a cosine to zero over
the others; cross-entropy; ``epochs`` passes over the train split in batches of the sweep's
evaluation batch size. The model is copied first: the
other evaluations of the checkpoint see it untouched. Runs on whatever device the evaluation
job has, in float32 (bf16 autocast on CUDA).

Metrics: ``finetune_acc1`` and ``finetune_acc5`` under the set, ``finetune_acc1`` under each
shifted set, and ``finetune_samples`` (images seen while fine-tuning) under the set, from
which a report adds the stage's compute to pre-training's (CLIPA's view).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scaling.config import EvalSet

WARMUP_STEPS = 20
WEIGHT_DECAY = 0.1


def finetune(
    s: EvalSet, shifted: list[EvalSet], model: Any, tokenizer: Any, loader: Any, device: str
) -> dict[str, dict[str, float]]:
    """Fine-tune a copy of ``model`` on ``s`` and score it; ``loader(set, split)`` gives a
    (dataset, batches) pair in CLIP_benchmark's layout."""
    import torch

    dataset, train = loader(s, "train")
    head = _zero_shot_head(model, tokenizer, dataset.classes, dataset.templates, device)
    tuned = _classifier(copy.deepcopy(model.visual), head).to(device)
    seen = _train(tuned, train, s, device)
    out = {
        s.name: {**_accuracy(tuned, loader(s, "test")[1], device, k=(1, 5)), "finetune_samples": float(seen)}
    }
    for other in shifted:
        out[other.name] = {
            "finetune_acc1": _accuracy(tuned, loader(other, "test")[1], device, k=(1,))["finetune_acc1"]
        }
    del tuned
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def _classifier(visual: Any, head: Any) -> Any:
    """The image tower, its features L2-normalised, then the linear head."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual, self.head = visual, head

        def forward(self, images: Any) -> Any:
            features = self.visual(images)
            if isinstance(features, tuple):  # towers that also return their tokens
                features = features[0]
            return self.head(torch.nn.functional.normalize(features, dim=-1))

    return Classifier()


def _zero_shot_head(model: Any, tokenizer: Any, classes: list[str], templates: list[str], device: str) -> Any:
    import torch
    from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

    weights = zero_shot_classifier(model, tokenizer, classes, templates, device, amp=False)  # (d, classes)
    head = torch.nn.Linear(weights.shape[0], weights.shape[1], bias=True)
    with torch.no_grad():
        scale = float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 1.0
        head.weight.copy_(weights.T.float() * scale)
        head.bias.zero_()
    return head


def _train(model: Any, batches: Any, s: EvalSet, device: str) -> int:
    """``s.epochs`` passes; the number of batches a pass holds is learnt in the first (a
    webdataset split does not say), so the rate warms up, holds through the first pass and
    then follows a cosine to zero over the others."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=WEIGHT_DECAY)
    amp = device.startswith("cuda")
    model.train()
    seen = step = 0
    per_epoch: int | None = None
    for epoch in range(s.epochs):
        for images, labels in batches:
            rate = min(1.0, (step + 1) / WARMUP_STEPS)
            if per_epoch is not None and s.epochs > 1:
                rate *= 0.5 * (1 + math.cos(math.pi * (step - per_epoch) / (per_epoch * (s.epochs - 1))))
            for group in opt.param_groups:
                group["lr"] = s.lr * rate
            images, labels = images.to(device), torch.as_tensor(labels, device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen, step = seen + len(labels), step + 1
        if epoch == 0:
            per_epoch = step
    model.eval()
    return seen


def _accuracy(model: Any, batches: Any, device: str, k: tuple[int, ...]) -> dict[str, float]:
    import torch

    hits, total = dict.fromkeys(k, 0), 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        for images, labels in batches:
            labels = torch.as_tensor(labels, device=device)
            top = model(images.to(device)).topk(max(k), dim=1).indices
            for j in k:
                hits[j] += int((top[:, :j] == labels[:, None]).any(dim=1).sum())
            total += len(labels)
    return {f"finetune_acc{j}": hits[j] / total for j in k}
