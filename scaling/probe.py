"""Linear probes on frozen image features: the full probe and k-shot probes, one algorithm on
CPU and GPU.

A multinomial logistic regression on L2-normalised features, fitted by
full-batch L-BFGS in float64 on whatever device holds the features, with its L2 penalty λ
chosen on a held-out fifth of the train split (a seeded shuffle; the probe is fitted on the
rest) and then refit on the whole train split for the full probe. A k-shot probe draws k
images per class from the other four fifths (a seeded draw per repetition), chooses λ on the
same held-out fifth, and is scored on the test split; the mean and standard deviation of its
top-1 accuracy over the repetitions are stored.

This is not CLIP_benchmark's probe (minibatch AdamW for a fixed number of epochs, CUDA only),
so its metrics are named ``probe_*`` (``probe_acc1``, ``probe_acc1_10shot``); CLIP_benchmark's
own, as imported from its result files, keep its ``lp_*`` names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

PENALTIES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # λ beside the mean cross-entropy
HELD_OUT = 5  # one fifth of the train split chooses λ
MAX_ITER = 100  # the weakest penalties on separable features would creep on for long


@dataclass(frozen=True)
class Probe:
    """A fitted probe: weights (d, classes) and bias; column i scores label index i."""

    weight: Any
    bias: Any

    def scores(self, x: Any) -> Any:
        return x @ self.weight + self.bias


def fit(x: Any, y: Any, penalty: float, n_classes: int) -> Probe:
    """Minimise mean cross-entropy + penalty·‖W‖² by L-BFGS (at most MAX_ITER iterations;
    x: torch, float64)."""
    import torch

    w = torch.zeros((x.shape[1], n_classes), dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=MAX_ITER, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(w.detach(), b.detach())


def _prepare(features: Any, labels: Any, device: str) -> tuple[Any, Any]:
    import torch

    x = torch.as_tensor(np.asarray(features), dtype=torch.float64, device=device)
    x = torch.nn.functional.normalize(x, dim=-1)
    return x, torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)


def _accuracy(probe: Probe, x: Any, y: Any) -> float:
    return float((probe.scores(x).argmax(dim=1) == y).double().mean())


def _choose(x: Any, y: Any, fit_idx: Any, held_idx: Any, n_classes: int) -> tuple[float, Probe]:
    """The penalty whose probe, fitted on ``fit_idx``, scores best on ``held_idx`` (ties: the
    stronger penalty), and that probe."""
    best: tuple[float, float, Probe] | None = None
    for penalty in sorted(PENALTIES, reverse=True):
        probe = fit(x[fit_idx], y[fit_idx], penalty, n_classes)
        score = _accuracy(probe, x[held_idx], y[held_idx])
        if best is None or score > best[0]:
            best = (score, penalty, probe)
    assert best is not None
    return best[1], best[2]


def evaluate(
    train: tuple[Any, Any], test: tuple[Any, Any], shots: tuple[int, ...] = (), seeds: int = 3,
    device: str = "cpu",
) -> dict[str, float]:  # fmt: skip
    """The full probe's ``probe_acc1``, ``probe_acc5`` and ``probe_mean_per_class_recall``, and
    for each k of ``shots`` ``probe_acc1_{k}shot`` (mean over ``seeds`` draws) and its ``_std``."""
    import torch

    labels = np.unique(np.concatenate([np.asarray(train[1]), np.asarray(test[1])]))
    index = {int(v): i for i, v in enumerate(labels)}
    x, y = _prepare(train[0], [index[int(v)] for v in np.asarray(train[1])], device)
    xt, yt = _prepare(test[0], [index[int(v)] for v in np.asarray(test[1])], device)
    n, k_classes = len(y), len(labels)
    # A seeded shuffle first: a split stored class by class would hold out whole classes.
    order = np.random.default_rng(0).permutation(n)
    held, rest = order[: n // HELD_OUT], order[n // HELD_OUT :]
    held_idx = torch.as_tensor(held, device=device)
    penalty, _ = _choose(x, y, torch.as_tensor(rest, device=device), held_idx, k_classes)
    full = fit(x, y, penalty, k_classes)
    out = _scores(full, xt, yt, k_classes)
    pool = np.asarray(y.cpu())[rest]
    for k in shots:
        accs = []
        for seed in range(seeds):
            chosen = rest[_draw(pool, k, seed)]
            _, probe = _choose(x, y, torch.as_tensor(chosen, device=device), held_idx, k_classes)
            accs.append(_accuracy(probe, xt, yt))
        out[f"probe_acc1_{k}shot"] = float(np.mean(accs))
        out[f"probe_acc1_{k}shot_std"] = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
    return out


def _draw(labels: Any, k: int, seed: int) -> Any:
    """Positions in ``labels`` of k of each class present (all of a class with fewer), by a
    seeded draw."""
    rng = np.random.default_rng([seed, k])
    picks = [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def _scores(probe: Probe, x: Any, y: Any, n_classes: int) -> dict[str, float]:
    import torch

    scores = probe.scores(x)
    top = torch.topk(scores, min(5, n_classes), dim=1).indices
    hit = top == y[:, None]
    predicted = top[:, 0]
    present = torch.unique(y)
    recall = [float((predicted[y == c] == c).double().mean()) for c in present]
    return {
        "probe_acc1": float(hit[:, 0].double().mean()),
        "probe_acc5": float(hit.any(dim=1).double().mean()) if n_classes >= 5 else math.nan,
        "probe_mean_per_class_recall": float(np.mean(recall)),
    }
