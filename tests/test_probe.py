"""The linear probe (scaling/probe.py) on features with a known class structure: the full
probe and k-shot probes, one algorithm on any device. Here on the CPU only: the same code on
CUDA (float64 L-BFGS) is what bench/probe_bench.py compares where a GPU is lent; this test cannot
show the two devices agree."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def gaussian_classes(
    n: int, seed: int, classes: int = 10, noise: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(0).normal(size=(classes, 16))  # the same classes in every split
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(scale=noise, size=(n, 16)), y


def test_k_shot_probes_rise_with_k_toward_the_full_probe() -> None:
    from scaling import probe

    out = probe.evaluate(gaussian_classes(2000, 1), gaussian_classes(1000, 2), shots=(1, 5, 25), seeds=3)
    means = [out[f"probe_acc1_{k}shot"] for k in (1, 5, 25)]
    assert 0.1 < means[0] < means[1] < means[2] < out["probe_acc1"]  # chance is 0.1
    assert all(out[f"probe_acc1_{k}shot_std"] > 0 for k in (1, 5, 25))
    assert out["probe_acc5"] > out["probe_acc1"] > 0.7
    assert out["probe_mean_per_class_recall"] == pytest.approx(out["probe_acc1"], abs=0.03)
    # Seeded throughout: the same features give the same numbers.
    assert (
        probe.evaluate(gaussian_classes(2000, 1), gaussian_classes(1000, 2), shots=(1, 5, 25), seeds=3) == out
    )


def test_a_train_split_stored_class_by_class_still_holds_every_class_out() -> None:
    from scaling import probe

    x, y = gaussian_classes(2000, 1)
    order = np.argsort(y, kind="stable")
    shuffled = probe.evaluate((x, y), gaussian_classes(1000, 2), shots=(5,), seeds=2)
    ordered = probe.evaluate((x[order], y[order]), gaussian_classes(1000, 2), shots=(5,), seeds=2)
    assert ordered["probe_acc1"] == pytest.approx(shuffled["probe_acc1"], abs=0.02)
    assert ordered["probe_acc1_5shot"] > 0.4


def test_a_class_with_fewer_than_k_images_gives_all_it_has() -> None:
    from scaling import probe

    labels = np.array([0] * 3 + [1] * 20 + [2] * 20)
    picks = probe._draw(labels, 10, seed=0)
    assert np.bincount(labels[picks]).tolist() == [3, 10, 10]
    assert not np.array_equal(picks, probe._draw(labels, 10, seed=1))
