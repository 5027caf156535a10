"""E = a·(C + b)^c + d, LAION 2025's saturating law (`saturation_both`): a, b, d ≥ 0, c ≤ 0.
b shifts where the power law starts to bend at small compute, d is the floor."""

from __future__ import annotations

import numpy as np

from scaling.fit.form import Form, floor_logs, sigmoid
from scaling.fit.huber import Array, grid_of

EXPONENTS = (-0.03, -0.1, -0.2, -0.4, -0.8)
SHIFTS = (-9.0, -4.5, -1.0, 1.5)  # ln(b / C_ref)


def predict(theta: Array, x: Array) -> tuple[Array, Array]:
    """θ = (ln a', c, ln b', ln d) on centred u: ln E = logaddexp(ln a' + c·s, ln d),
    s = ln(e^u + b')."""
    la, c, lb, ld = theta
    u = x[0]
    s = np.logaddexp(u, lb)
    t = la + c * s
    w = sigmoid(t - ld)
    return np.logaddexp(t, ld), np.stack([w, w * s, w * c * sigmoid(lb - u), 1.0 - w])


def starts(x: Array, log_y: Array) -> Array:
    centre = float(np.exp(np.median(log_y)))
    rows = []
    for c, lb, ld in grid_of(EXPONENTS, SHIFTS, floor_logs(log_y)):
        rest = max(centre - np.exp(ld), 1e-3 * centre)
        rows.append((np.log(rest) - c * np.logaddexp(0.0, lb), c, lb, ld))
    return np.array(rows)


def natural(theta: Array, ref: Array) -> dict[str, float]:
    la, c, lb, ld = (float(v) for v in theta)
    return {"a": float(np.exp(la - c * ref[0])), "b": float(np.exp(lb + ref[0])), "c": c,
            "d": float(np.exp(ld))}  # fmt: skip


def internal(p: dict[str, float], ref: Array) -> Array:
    return np.array([np.log(p["a"]) + p["c"] * ref[0], p["c"], np.log(p["b"]) - ref[0], np.log(p["d"])])


def formula(p: dict[str, float]) -> str:
    return f"E = {p['a']:.4g}·(C + {p['b']:.3g})^{p['c']:.4f} + {p['d']:.4g}"


FORM = Form(
    "saturating", ("a", "b", "c", "d"), predict,
    ((-60.0, 60.0), (-3.0, 0.0), (-30.0, 30.0), (-30.0, 5.0)), starts, natural, internal, formula,
)  # fmt: skip
