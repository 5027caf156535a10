"""A broken power law with one break (Caballero et al.'s BNSL, n = 1):

    E = a + b·C^(−c0)·(1 + (C/d)^(1/f))^(−c1·f)

The slope in log-log is −c0 below the break at C = d and −(c0 + c1) above it; f is how
sharp the break is, a the floor. For curves that bend the other way than a floor makes
them bend (c1 < 0: scaling slows down before it levels off, or speeds up)."""

from __future__ import annotations

import numpy as np

from scaling.fit.form import Form, sigmoid, softplus
from scaling.fit.huber import Array, grid_of

SLOPES = (0.02, 0.1, 0.25, 0.5)
BENDS = (-0.3, -0.1, 0.1, 0.3)
SHARPNESS = (-2.0, 0.0)  # ln f


def predict(theta: Array, x: Array) -> tuple[Array, Array]:
    """θ = (ln a, ln b', c0, c1, ln d', ln f) on centred u."""
    la, lb, c0, c1, ld, lf = theta
    u = x[0]
    f = np.exp(lf)
    z = (u - ld) / f
    s, sz = softplus(z), sigmoid(z)
    g = lb - c0 * u - c1 * f * s
    w = sigmoid(g - la)
    jac = np.stack([1.0 - w, w, -w * u, -w * f * s, w * c1 * sz, -w * c1 * f * (s - z * sz)])
    return np.logaddexp(g, la), jac


def starts(x: Array, log_y: Array) -> Array:
    u = x[0]
    centre = float(np.median(log_y))
    low = float(log_y.min())
    breaks = np.quantile(u, [0.25, 0.5, 0.75])
    rows = []
    for c0, c1, ld, lf, la in grid_of(SLOPES, BENDS, breaks, SHARPNESS, (low - 7.0, low - 1.0)):
        lb = centre + c1 * np.exp(lf) * np.logaddexp(0.0, -ld / np.exp(lf))  # matches E at u = 0
        rows.append((la, lb, c0, c1, ld, lf))
    return np.array(rows)


def natural(theta: Array, ref: Array) -> dict[str, float]:
    la, lb, c0, c1, ld, lf = (float(v) for v in theta)
    return {"a": float(np.exp(la)), "b": float(np.exp(lb + c0 * ref[0])), "c0": c0, "c1": c1,
            "d": float(np.exp(ld + ref[0])), "f": float(np.exp(lf))}  # fmt: skip


def internal(p: dict[str, float], ref: Array) -> Array:
    return np.array([np.log(p["a"]), np.log(p["b"]) - p["c0"] * ref[0], p["c0"], p["c1"],
                     np.log(p["d"]) - ref[0], np.log(p["f"])])  # fmt: skip


def formula(p: dict[str, float]) -> str:
    return (f"E = {p['a']:.3g} + {p['b']:.4g}·C^{-p['c0']:.4f}·(1 + (C/{p['d']:.3g})^(1/{p['f']:.3g}))"
            f"^{-p['c1'] * p['f']:.4f}")  # fmt: skip


FORM = Form(
    "broken", ("a", "b", "c0", "c1", "d", "f"), predict,
    ((-30.0, 5.0), (-60.0, 60.0), (-1.0, 3.0), (-3.0, 3.0), (-40.0, 40.0), (-4.6, 2.3)),
    starts, natural, internal, formula,
)  # fmt: skip
