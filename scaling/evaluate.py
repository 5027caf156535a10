"""Evaluate a trained checkpoint like the paper, with CLIP_benchmark as the library.

Zero-shot classification (acc1, acc5, mean_per_class_recall) and zero-shot retrieval
(image/text_retrieval_recall@1/5/10) call CLIP_benchmark's own metric functions on
data sets in its webdataset layout, so real ImageNet or MS-COCO exports work by path on a
cluster exactly as the toy sets do here. Linear probes, full and k-shot, are scaling/probe.py's
on the image tower's features: one algorithm on CPU and GPU, named ``probe_*`` because it is
not CLIP_benchmark's (CUDA-only) probe, whose imported results keep ``lp_*``.

``evaluate_run`` is a point's evaluation job: it reads the training record, evaluates the
final checkpoint and writes the point's ``outcome.json``. It runs apart from training (on
one GPU, or one CPU task), so a failed evaluation is rerun alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling.config import EvalSet, EvalSpec
from scaling.errors import ClipscaleError

if TYPE_CHECKING:
    from scaling.outcome import Outcome
    from scaling.runspec import RunSpec

RECALL_K = (1, 5, 10)


def check_eval_sets(spec: EvalSpec) -> None:
    """Fail before training if an evaluation set is missing or incomplete."""
    for s in (*spec.sets, *(shift for t in spec.sets for shift in t.shifted)):
        root = Path(s.path)
        if "://" in s.path:
            continue  # remote sets are read by CLIP_benchmark itself
        splits = ["test", "train"] if s.task in ("linear_probe", "finetune") else ["test"]
        for split in splits:
            if not (root / split / "nshards.txt").is_file():
                raise ClipscaleError(f"evaluation set {s.name}: {root / split / 'nshards.txt'} not found")
        if s.task != "zeroshot_retrieval" and not _nonempty(root / "classnames.txt"):
            raise ClipscaleError(f"evaluation set {s.name}: no class names ({root / 'classnames.txt'})")
        templates = root / "zeroshot_classification_templates.txt"
        if s.task in ("zeroshot_classification", "finetune") and not _nonempty(templates):
            raise ClipscaleError(f"evaluation set {s.name}: no zero-shot templates ({templates})")


def _nonempty(path: Path) -> bool:
    return path.is_file() and bool(path.read_text().strip())


def evaluate_run(spec: RunSpec, quiet: bool = True) -> Outcome:
    """Evaluate a trained point's final checkpoint and write its outcome (a finished
    outcome is returned as it is). Raises ClipscaleError if training has not finished."""
    import socket
    import time

    from scaling import train, trainerlog
    from scaling.outcome import RESULTS, Outcome, read_outcome, read_trained, set_aside_failure, write_outcome
    from scaling.registry import register_models

    directory, point = spec.directory, spec.point
    done = read_outcome(directory) if directory.is_dir() else None
    if done is not None and done.status in RESULTS:
        return done
    trained = read_trained(directory) if directory.is_dir() else None
    if trained is None:
        raise ClipscaleError(f"point {point.id} has not finished training: no trained.json in {directory}")
    set_aside_failure(directory)  # first: an evaluation that stops at a check leaves no old error
    check_eval_sets(spec.evals)
    register_models([spec.model])  # a process of its own: the toy models are not open_clip's
    started, clock = train.now(), time.monotonic()
    device = train.torch_device()
    metrics: dict[str, dict[str, float | None]] = {}
    error = None
    try:
        t = point.train
        with trainerlog.console(directory, quiet):  # open_clip logs with the root logger
            metrics = evaluate(
                point.model, directory / trained.checkpoint, spec.evals, device, t.image_size,
                t.context_length, workers=t.workers, model_type=t.model_type,
            )  # fmt: skip
    except ClipscaleError:
        raise
    except Exception as e:  # evaluation failing is this run's failure; its training stands
        error = f"evaluation failed: {type(e).__name__}: {e}"
    outcome = Outcome(
        id=point.id, status="failed" if error else "succeeded", samples_seen=trained.samples_seen,
        samples_seen_planned=point.samples_seen, epochs=trained.epochs,
        wall_time_s=round(time.monotonic() - clock, 3), train_time_s=trained.train_time_s,
        samples_per_s=trained.samples_per_s, metrics=metrics, loss=trained.loss, error=error,
        log_tail=trainerlog.tail(directory) if error else [], started_at=trained.started_at or started,
        finished_at=train.now(), host=socket.gethostname(), versions=train.versions(), mfu=trained.mfu,
        ranks=trained.ranks, stage="eval" if error else "", checkpoint=trained.checkpoint,
    )  # fmt: skip
    return write_outcome(directory, outcome)


def evaluate(
    model_name: str,
    checkpoint: Path,
    spec: EvalSpec,
    device: str,
    image_size: int | None = None,
    context_length: int | None = None,
    workers: int = 0,
    model_type: str = "clip",
) -> dict[str, dict[str, float | None]]:
    """Metrics per evaluation set (plus the robustness average) for one checkpoint; the
    model is rebuilt as its type's trainer built it (SigLIP's logit bias)."""
    import open_clip

    from scaling.modeltypes import model_kwargs

    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name,
        pretrained=str(checkpoint),
        device=device,
        force_image_size=image_size,
        force_context_length=context_length,
        **model_kwargs(model_type),
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)
    results: dict[str, dict[str, float | None]] = {}
    for s in spec.sets:
        if s.task == "finetune":  # a copy of the model is tuned: the other sets see it untouched
            from scaling.finetune import finetune

            def loader(e: EvalSet, split: str) -> Any:
                return _loader(e, split, preprocess, spec.batch_size, workers)

            for name, metrics in finetune(s, list(s.shifted), model, tokenizer, loader, device).items():
                results.setdefault(name, {}).update(metrics)
            continue
        metrics = _run(s, model, preprocess, tokenizer, spec.batch_size, device, workers)
        results.setdefault(s.name, {}).update(metrics)
    if spec.robustness_name and spec.robustness_sets:
        accs = [results[name]["acc1"] or 0.0 for name in spec.robustness_sets]
        results[spec.robustness_name] = {"acc1": sum(accs) / len(accs)}
    return results


def _loader(s: EvalSet, split: str, preprocess: Any, batch_size: int, workers: int = 0) -> Any:
    import torch
    from clip_benchmark.datasets.builder import build_dataset, get_dataset_collate_fn

    task = "zeroshot_retrieval" if s.task == "zeroshot_retrieval" else "zeroshot_classification"
    dataset = build_dataset(f"wds/{s.name}", root=s.path, transform=preprocess, split=split, task=task)
    # Retrieval batches keep each image's list of captions, as for MS-COCO.
    collate = get_dataset_collate_fn("mscoco_captions" if task == "zeroshot_retrieval" else s.name)
    batched = dataset.batched(batch_size, collation_fn=collate)
    # webdataset hands each worker its own shards: more workers than shards would idle.
    workers = min(workers, _shards(s, split))
    loader = torch.utils.data.DataLoader(batched, batch_size=None, num_workers=workers)
    return dataset, loader


def _shards(s: EvalSet, split: str) -> int:
    try:
        return int((Path(s.path) / split / "nshards.txt").read_text().strip())
    except (OSError, ValueError):
        return 1  # a remote set: CLIP_benchmark reads its count itself


def _run(
    s: EvalSet,
    model: Any,
    preprocess: Any,
    tokenizer: Any,
    batch_size: int,
    device: str,
    workers: int = 0,
) -> dict[str, float]:
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    amp = device.startswith("cuda")
    if s.task == "zeroshot_classification":
        dataset, loader = _loader(s, "test", preprocess, batch_size, workers)
        if not dataset.classes or not dataset.templates:
            raise ClipscaleError(f"evaluation set {s.name}: no class names or templates in {s.path}")
        out = zeroshot_classification.evaluate(
            model, loader, tokenizer, dataset.classes, dataset.templates, device, amp=amp
        )
        return {k: float(v) for k, v in out.items()}
    if s.task == "zeroshot_retrieval":
        _, loader = _loader(s, "test", preprocess, batch_size, workers)
        out = zeroshot_retrieval.evaluate(
            model, loader, tokenizer, device, amp=amp, recall_k_list=list(RECALL_K)
        )
        return {k: float(v) for k, v in out.items()}
    return _linear_probe(s, model, preprocess, batch_size, device, workers)


def _linear_probe(
    s: EvalSet, model: Any, preprocess: Any, batch_size: int, device: str, workers: int
) -> dict[str, float]:
    from scaling import probe

    _, train = _loader(s, "train", preprocess, batch_size, workers)
    _, test = _loader(s, "test", preprocess, batch_size, workers)
    return probe.evaluate(
        _features(model, train, device), _features(model, test, device), s.shots, s.seeds, device
    )


def _features(model: Any, loader: Any, device: str) -> tuple[Any, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    features, targets = [], []
    with torch.no_grad():
        for images, labels in loader:
            features.append(F.normalize(model.encode_image(images.to(device)), dim=-1).cpu().numpy())
            targets.append(np.asarray(labels))
    return np.concatenate(features), np.concatenate(targets)
