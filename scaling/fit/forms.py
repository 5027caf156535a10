"""The forms a law of error against compute can take, by name, and one call that fits any
of them: ``power`` (E = β·C^α), ``floor``, ``saturating`` and ``broken``.

Two objectives: ``ols``, the paper's least squares of log10 E on log10 C (the power law's
default: the paper's numbers reproduce), and ``huber``, the Epoch way (scaling/fit/curve.py),
which every other form uses and which choosing a form by held-out error uses for all forms
alike, power included."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scaling.errors import ClipscaleError
from scaling.fit import broken, floor, power, saturating
from scaling.fit.curve import fit_curve
from scaling.fit.form import Form
from scaling.fit.huber import DELTA, Array
from scaling.fit.powerlaw import fit_law

CURVES: dict[str, Form] = {f.name: f for f in (power.FORM, floor.FORM, saturating.FORM, broken.FORM)}
FORMS = tuple(CURVES)
N_PARAMS = {k: f.n_params for k, f in CURVES.items()}
OBJECTIVES = ("ols", "huber")
DEFAULT_FRONTIER = {"power": "binned"}  # the paper's; every other form: LAION 2025's geometric bins


def frontier_for(form: str, requested: str | None) -> str:
    return requested or DEFAULT_FRONTIER.get(form, "geometric")


def fit_form(
    form: str, compute: Sequence[float] | Array, error: Sequence[float] | Array,
    runs: Sequence[str] | None = None, *, method: str | None = None, bins: int = 5, n_boot: int = 1000,
    level: float = 0.95, seed: int = 0, delta: float = DELTA, upper: float | None = 1.0,
    objective: str | None = None, noise: float = 0.0,
) -> Any:  # fmt: skip
    """A law of ``form`` through the runs' frontier: a powerlaw.Law (the power law by least
    squares, its default) or a curve.Curve (any form by the summed Huber loss)."""
    method = frontier_for(form, method)
    objective = objective or ("ols" if form == "power" else "huber")
    if objective not in OBJECTIVES:
        raise ClipscaleError(f"objective={objective!r}: use ols or huber")
    if objective == "ols" and form != "power":
        raise ClipscaleError(f"the {form} law is fitted by the Huber loss only (objective=huber)")
    if form == "power" and objective == "ols":
        return fit_law(compute, error, runs, method=method, bins=bins, n_boot=n_boot, level=level,
                       seed=seed, upper=upper, noise=noise)  # fmt: skip
    if form not in CURVES:
        raise ClipscaleError(f"unknown form {form!r} (valid: {', '.join(FORMS)}, surface, auto)")
    return fit_curve(CURVES[form], compute, error, runs, method=method, bins=bins, n_boot=n_boot,
                     level=level, seed=seed, delta=delta, upper=upper, noise=noise)  # fmt: skip
