"""The arguments of open_clip's own trainer for a grid point: everything that changes what is
trained is said, nothing is left to the trainer's defaults."""

from __future__ import annotations

from pathlib import Path

from scaling import checkpoints, modeltypes
from scaling.grid import GridPoint


def open_clip_argv(
    point: GridPoint,
    runs_root: Path,
    device: str,
    pretrained: Path | None = None,
    policy: checkpoints.CheckpointPolicy | None = None,
) -> list[str]:
    """The ``open_clip_train.main`` arguments of a point: nothing left to its defaults
    that changes what is trained."""
    t = point.train
    assert t.epochs is not None and t.train_num_samples is not None
    batches_per_epoch = point.samples_per_epoch // (t.batch_size * t.gpus)
    argv = [
        "--model", point.model,
        "--train-data", point.shards,
        "--dataset-type", "webdataset",
        "--dataset-resampled",
        "--train-num-samples", str(t.train_num_samples),
        "--epochs", str(t.epochs),
        "--batch-size", str(t.batch_size),
        "--accum-freq", str(t.accum_freq),
        "--workers", str(t.workers),
        "--lr", repr(t.lr),
        "--warmup", str(t.warmup),
        "--lr-scheduler", t.lr_scheduler,
        "--wd", repr(t.wd),
        "--beta1", repr(t.beta1),
        "--beta2", repr(t.beta2),
        "--eps", repr(t.eps),
        "--precision", t.precision,
        "--seed", str(t.seed),
        "--device", device,
        # NCCL needs GPUs; a multi-process run on CPUs talks through gloo.
        "--dist-backend", "nccl" if device == "cuda" else "gloo",
        "--logs", str(runs_root),
        "--name", point.id,
        "--resume", "latest",
        *checkpoints.trainer_args(policy or checkpoints.CheckpointPolicy()),
        "--report-to", "",
        # Often enough for a loss curve, a progress bar and catching a divergence early,
        # and always at an epoch's end.
        "--log-every-n-steps", str(max(1, min(100, batches_per_epoch // 20))),
    ]  # fmt: skip
    for flag, on in (("--torchcompile", t.torchcompile), ("--grad-checkpointing", t.grad_checkpointing),
                     ("--local-loss", t.local_loss), ("--gather-with-grad", t.gather_with_grad)):  # fmt: skip
        if on:
            argv.append(flag)
    if point.trajectory is not None and point.trajectory.cooldown_epochs:
        # A branch resumes at its cooldown's first epoch: its whole run is the cooldown.
        argv += ["--epochs-cooldown", str(point.trajectory.cooldown_epochs)]
    argv += modeltypes.trainer_args(t.model_type, t.coca_caption_loss_weight, t.coca_contrastive_loss_weight)
    if t.image_size is not None:
        argv += ["--force-image-size", str(t.image_size)]
    if t.context_length is not None:
        argv += ["--force-context-length", str(t.context_length)]
    if t.patch_dropout is not None:
        argv += ["--force-patch-dropout", repr(t.patch_dropout)]
    if pretrained is not None:
        argv += ["--pretrained", str(pretrained)]
    return argv + list(t.extra_args)
