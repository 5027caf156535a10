"""E = β·C^α fitted the Epoch way (summed Huber of ln residuals) instead of the paper's least
squares: the power law as a candidate beside the other forms, so that choosing a form by
held-out error compares forms, not objectives. Robust to a frontier point that is a run
above the law (a bin whose best run was not tuned)."""

from __future__ import annotations

import numpy as np

from scaling.fit.form import Form
from scaling.fit.huber import Array, grid_of

ALPHAS = (-0.02, -0.1, -0.3, -0.8)


def predict(theta: Array, x: Array) -> tuple[Array, Array]:
    """θ = (ln β', α) on centred u: ln E = ln β' + α·u."""
    u = x[0]
    return theta[0] + theta[1] * u, np.stack([np.ones_like(u), u])


def starts(x: Array, log_y: Array) -> Array:
    return grid_of([float(np.median(log_y))], ALPHAS)


def natural(theta: Array, ref: Array) -> dict[str, float]:
    return {"alpha": float(theta[1]), "beta": float(np.exp(theta[0] - theta[1] * ref[0]))}


def internal(p: dict[str, float], ref: Array) -> Array:
    return np.array([np.log(p["beta"]) + p["alpha"] * ref[0], p["alpha"]])


def formula(p: dict[str, float]) -> str:
    return f"E = {p['beta']:.4g}·C^{p['alpha']:.4f}"


FORM = Form("power", ("alpha", "beta"), predict, ((-60.0, 60.0), (-5.0, 5.0)), starts, natural, internal,
            formula, top=None)  # fmt: skip
