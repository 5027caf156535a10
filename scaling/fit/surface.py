"""The error surface E(N, D) = E + A/N^α + B/D^β (Hoffmann et al.'s Approach 3) over every
run, N the model's size (parameters or GMACs per sample) and D its samples seen, fitted as
Epoch's replication does: ln Ê = LSE(a − α ln N, b − β ln D, e) with A, B, E = e^a, e^b, e^e,
the summed Huber loss (δ = 1e-3) of ln E − ln Ê, L-BFGS-B from their grid of 4,500 starts.

``effective``: the data-constrained variant (Muennighoff et al. 2023). Samples seen beyond
the data set's U unique samples are repeats and count less: with R = D/U − 1 repetitions,
D' = U + U·R*·(1 − e^(−R/R*)), R* fitted (their 15.4 for language). A CLIP grid that sees
LAION-80M 425 times is then on the surface rather than below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scaling.errors import ClipscaleError
from scaling.fit.form import Form
from scaling.fit.huber import DELTA, Array, Problem, grid_of, local, solve
from scaling.fit.powerlaw import percentile_interval

EPOCH_GRID = dict(a=range(0, 30, 5), b=range(0, 30, 5), e=(-1, -0.5, 0, 0.5, 1), alpha=(0, 0.5, 1, 1.5, 2),
                  beta=(0, 0.5, 1, 1.5, 2))  # fmt: skip
REPEAT_STARTS = (np.log(2.0), np.log(15.4), np.log(100.0))  # ln R*
SENSITIVITY = (1e-4, 1e-2)


def _lse(theta: Array, ln_n: Array, ln_d: Array) -> tuple[Array, Array]:
    a, b, e, alpha, beta = theta[:5]
    t = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])
    top = t.max(axis=0)
    w = np.exp(t - top)
    z = w.sum(axis=0)
    w /= z
    return top + np.log(z), np.stack([w[0], w[1], w[2], -w[0] * ln_n, -w[1] * ln_d])


def predict(theta: Array, x: Array) -> tuple[Array, Array]:
    """x = (ln N, ln D)."""
    return _lse(theta, x[0], x[1])


def effective_data(ln_d: Array, ln_u: Array, r_star: float) -> tuple[Array, Array]:
    """ln D' and d ln D'/d ln R*."""
    d, u = np.exp(ln_d), np.exp(ln_u)
    reps = np.maximum(d / u - 1.0, 0.0)
    decay = np.exp(-reps / r_star)
    eff = u * (1.0 + r_star * (1.0 - decay))
    eff = np.where(reps > 0, eff, d)
    grad = np.where(reps > 0, u * r_star * ((1.0 - decay) - (reps / r_star) * decay) / eff, 0.0)
    return np.log(eff), grad


def predict_effective(theta: Array, x: Array) -> tuple[Array, Array]:
    """x = (ln N, ln D, ln U); θ = (a, b, e, α, β, ln R*)."""
    ln_eff, grad = effective_data(x[1], x[2], float(np.exp(theta[5])))
    pred, jac = _lse(theta, x[0], ln_eff)
    return pred, np.vstack([jac, -jac[1] * theta[4] * grad])  # ∂/∂ln D' = −β·w_D


def _starts(x: Array, log_y: Array) -> Array:
    g = EPOCH_GRID
    return grid_of(g["a"], g["b"], g["e"], g["alpha"], g["beta"])


def _starts_effective(x: Array, log_y: Array) -> Array:
    base = _starts(x, log_y)
    return np.vstack([np.column_stack([base, np.full(len(base), r)]) for r in REPEAT_STARTS])


def _natural(theta: Array, ref: Array) -> dict[str, float]:
    out = {"E": float(np.exp(theta[2])), "A": float(np.exp(theta[0])), "B": float(np.exp(theta[1])),
           "alpha": float(theta[3]), "beta": float(theta[4])}  # fmt: skip
    if len(theta) > 5:
        out["R_star"] = float(np.exp(theta[5]))
    return out


def _internal(p: dict[str, float], ref: Array) -> Array:
    base = [np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]]
    return np.array(base + ([np.log(p["R_star"])] if "R_star" in p else []))


def _formula(p: dict[str, float]) -> str:
    d = "D'" if "R_star" in p else "D"
    text = f"E = {p['E']:.4g} + {p['A']:.4g}/N^{p['alpha']:.4f} + {p['B']:.4g}/{d}^{p['beta']:.4f}"
    return text + (f", R* = {p['R_star']:.3g}" if "R_star" in p else "")


_BOUNDS = ((-60.0, 100.0), (-60.0, 100.0), (-30.0, 10.0), (0.0, 5.0), (0.0, 5.0))
SURFACE = Form("surface", ("E", "A", "B", "alpha", "beta"), predict, _BOUNDS, _starts, _natural, _internal,
               _formula, top=64, variables=2)  # fmt: skip
EFFECTIVE = Form("surface-effective", ("E", "A", "B", "alpha", "beta", "R_star"), predict_effective,
                 (*_BOUNDS, (np.log(0.1), np.log(1e4))), _starts_effective, _natural, _internal, _formula,
                 top=64, variables=3)  # fmt: skip


@dataclass(frozen=True)
class Surface:
    form: Form
    size: str  # what N is: "params" or "gmacs"
    params: dict[str, float]
    params_ci: dict[str, tuple[float, float]]
    level: float
    n_runs: int
    objective: float
    delta: float
    converged: bool
    reached: int
    tried: int
    grid: int
    rmse: float  # ln residual over the runs
    n_boot: int
    boot_valid: int
    seed: int
    sensitivity: dict[float, dict[str, float]]
    theta: Array = field(repr=False, compare=False)
    draws: Array = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.form.name

    @property
    def formula(self) -> str:
        return self.form.formula(self.params)

    def error(self, n: Array, d: Array, u: Array | None = None) -> Array:
        """E at model sizes ``n`` and samples seen ``d`` (``u``: unique samples, effective form)."""
        x = [np.log(np.asarray(n, float)), np.log(np.asarray(d, float))]
        if self.form is EFFECTIVE:
            if u is None:
                raise ClipscaleError("the effective-data surface needs the data set's size")
            x.append(np.log(np.asarray(u, float)))
        return np.exp(self.form.predict(self.theta, np.array(x))[0])

    @property
    def has_optimum(self) -> bool:
        """Both exponents positive: spending more on either N or D lowers E, so a budget
        has a best split."""
        return self.params["alpha"] > 0 and self.params["beta"] > 0

    def optimal(self, compute: Array) -> tuple[Array, Array]:
        """Compute-optimal N and D for budgets C = N·D (N in GMACs per sample, no repeats):
        N* = G·C^(β/(α+β)), D* = C/N*, G = (αA/(βB))^(1/(α+β))."""
        p = self.params
        a, b = p["alpha"], p["beta"]
        if not self.has_optimum:
            raise ClipscaleError("the surface has a zero exponent: no compute-optimal size")
        g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
        n = g * np.asarray(compute, float) ** (b / (a + b))
        return n, np.asarray(compute, float) / n

    def best_of(self, catalogue: dict[str, float], compute: float) -> tuple[str, float, float]:
        """The catalogue model (name → N in GMACs per sample) with the least error at a budget:
        its name, samples seen C/N and predicted E."""
        names = sorted(catalogue)
        n = np.array([catalogue[k] for k in names])
        errors = self.error(n, compute / n)
        i = int(np.argmin(errors))
        return names[i], float(compute / n[i]), float(errors[i])


def fit_surface(
    n: Sequence[float] | Array, d: Sequence[float] | Array, error: Sequence[float] | Array,
    unique: Sequence[float] | Array | None = None, *, size: str = "gmacs", n_boot: int = 1000,
    level: float = 0.95, seed: int = 0, delta: float = DELTA, top: int | None = -1,
) -> Surface:  # fmt: skip
    """Fit the surface on every run (with ``unique``, the effective-data variant)."""
    form = SURFACE if unique is None else EFFECTIVE
    cols = [np.asarray(n, float), np.asarray(d, float)] + (
        [] if unique is None else [np.asarray(unique, float)]
    )
    e = np.asarray(error, float)
    for name, col in zip(("model size", "samples seen", "data size"), cols, strict=False):
        if len(col) != len(e) or not np.all(np.isfinite(col) & (col > 0)):
            raise ClipscaleError(f"every run needs a positive {name} for the surface")
    if not np.all(np.isfinite(e) & (e > 0)):
        raise ClipscaleError("every run needs a positive error for the surface")
    need = form.min_points()
    if len(e) < need:
        raise ClipscaleError(f"{len(e)} run(s): the {form.name} law needs {need}")
    x, log_y = np.log(np.array(cols)), np.log(e)
    problem = Problem(form.predict, x, log_y, form.bounds, delta)
    sol = solve(problem, form.starts(x, log_y), form.top if top == -1 else top)
    if not sol.converged:
        raise ClipscaleError(f"the {form.name} law did not converge ({sol.message})")
    draws = _bootstrap(form, x, log_y, delta, sol.theta, n_boot, seed)
    ref = np.zeros(1)
    natural = [form.natural(t, ref) for t in draws]
    params = form.natural(sol.theta, ref)
    sensitivity = {}
    for dl in SENSITIVITY:
        theta, _, ok, _ = local(Problem(form.predict, x, log_y, form.bounds, dl), sol.theta, tight=True)
        if ok:
            sensitivity[dl] = form.natural(theta, ref)
    residual = log_y - form.predict(sol.theta, x)[0]
    return Surface(
        form=form, size=size, params=params,
        params_ci={k: percentile_interval(np.array([v[k] for v in natural]), level) for k in params},
        level=level, n_runs=len(e), objective=sol.objective, delta=delta, converged=sol.converged,
        reached=sol.reached, tried=sol.tried, grid=sol.grid, rmse=float(np.sqrt(np.mean(residual**2))),
        n_boot=n_boot, boot_valid=len(draws), seed=seed, sensitivity=sensitivity, theta=sol.theta,
        draws=draws,
    )  # fmt: skip


def _bootstrap(
    form: Form, x: Array, log_y: Array, delta: float, theta: Array, n_boot: int, seed: int
) -> Array:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(log_y), len(log_y))
        t, _, ok, _ = local(
            Problem(form.predict, x[:, idx], log_y[idx], form.bounds, delta), theta, tight=True
        )
        if ok:
            out.append(t)
    return np.array(out).reshape(len(out), form.n_params)
