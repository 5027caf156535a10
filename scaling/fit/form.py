"""What a law's form is to the fitter: its prediction in log space with the exact Jacobian,
bounds, a data-dependent grid of starting points, and its parameters in the user's units.

Forms of one variable take u = ln C − ln C_ref, compute centred on the geometric mean of the
runs fitted, so amplitudes and exponents are not tied together by a 1e12 scale; ``natural``
undoes the centring, so the parameters reported are those of E(C) in the family's units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scaling.fit.huber import Array, Predictor

Bounds = tuple[tuple[float | None, float | None], ...]


@dataclass(frozen=True)
class Form:
    name: str
    params: tuple[str, ...]  # reported parameters, in order
    predict: Predictor  # θ, centred inputs → ln E and its Jacobian (p, n)
    bounds: Bounds
    starts: Callable[[Array, Array], Array]  # centred inputs, ln E → starting points (k, p)
    natural: Callable[[Array, Array], dict[str, float]]  # θ, ln C_ref per input → params
    internal: Callable[[dict[str, float], Array], Array]  # the inverse of natural
    formula: Callable[[dict[str, float]], str]
    top: int | None = 64  # starts optimised after scoring the grid (None: all of them)
    variables: int = 1  # 1: compute; 2: model size and samples seen

    @property
    def n_params(self) -> int:
        return len(self.bounds)

    def min_points(self) -> int:
        """Points needed to fit it with at least one degree of freedom left for its residuals."""
        return self.n_params + 1


def sigmoid(z: Array) -> Array:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def softplus(z: Array) -> Array:
    return np.asarray(np.logaddexp(0.0, z))


def floor_logs(log_y: Array) -> list[float]:
    """Candidate floors (ln of an irreducible error): shares of the lowest error observed."""
    low = float(np.exp(log_y.min()))
    return [float(np.log(q * low)) for q in (1e-3, 0.25, 0.5, 0.75, 0.9)]
