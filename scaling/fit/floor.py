"""E = E∞ + β·C^α: a power law that levels off at an irreducible error E∞ (the form of
Hoffmann et al.'s surface along one axis; LAION 2025's saturating law with b = 0)."""

from __future__ import annotations

import numpy as np

from scaling.fit.form import Form, floor_logs, sigmoid
from scaling.fit.huber import Array, grid_of

ALPHAS = (-0.02, -0.05, -0.1, -0.2, -0.4, -0.8)


def predict(theta: Array, x: Array) -> tuple[Array, Array]:
    """θ = (ln β', α, ln E∞) on centred u: ln E = logaddexp(ln β' + α·u, ln E∞)."""
    lb, alpha, le = theta
    u = x[0]
    t = lb + alpha * u
    w = sigmoid(t - le)  # the power term's share of E
    return np.logaddexp(t, le), np.stack([w, w * u, 1.0 - w])


def starts(x: Array, log_y: Array) -> Array:
    centre = float(np.exp(np.median(log_y)))
    rows = []
    for alpha, le in grid_of(ALPHAS, floor_logs(log_y)):
        rest = max(centre - np.exp(le), 1e-3 * centre)  # the power term carries the rest at u = 0
        rows.append((np.log(rest), alpha, le))
    return np.array(rows)


def natural(theta: Array, ref: Array) -> dict[str, float]:
    lb, alpha, le = (float(v) for v in theta)
    return {"E_inf": float(np.exp(le)), "beta": float(np.exp(lb - alpha * ref[0])), "alpha": alpha}


def internal(p: dict[str, float], ref: Array) -> Array:
    return np.array([np.log(p["beta"]) + p["alpha"] * ref[0], p["alpha"], np.log(p["E_inf"])])


def formula(p: dict[str, float]) -> str:
    return f"E = {p['E_inf']:.4g} + {p['beta']:.4g}·C^{p['alpha']:.4f}"


FORM = Form(
    "floor", ("E_inf", "beta", "alpha"), predict, ((-60.0, 60.0), (-3.0, 0.0), (-30.0, 5.0)),
    starts, natural, internal, formula,
)  # fmt: skip
