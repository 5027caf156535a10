"""What the words of `scaling fit`, `predict`, `audit`, `suggest`, `compare` and `report` ask
of a law: ``key=value`` settings told apart from run filters, the fit's settings, the metric,
what to predict. The CLI is a thin layer over this and the fit library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from scaling.errors import ClipscaleError

FIT_KEYS = (
    "dataset",
    "metric",
    "frontier",
    "bins",
    "boot",
    "level",
    "seed",
    "form",
    "delta",
    "cut",
    "noise",
    "starts",
    "size",
    "budget",
)


TARGET_KEYS = ("model", "samples_seen", "compute", "gmacs")


def split_args(args: Sequence[str], keys: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Separate the command's own ``key=value`` settings from the run filters."""
    filters, options = [], {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key.strip() in keys:
            options[key.strip()] = value.strip()
        else:
            filters.append(arg)
    return filters, options


def settings_of(options: dict[str, str]) -> Any:
    from scaling.fit.laws import Settings

    def number(key: str, kind: Callable[[str], Any], default: Any) -> Any:
        try:
            return kind(options[key]) if key in options else default
        except ValueError:
            raise ClipscaleError(f"{key}={options[key]!r} is not a number") from None

    from scaling.fit.forms import FORMS
    from scaling.fit.frontier import METHODS

    form = options.get("form", "power")
    if form not in (*FORMS, "auto", *SURFACES):
        raise ClipscaleError(f"form={form!r}: use {', '.join((*FORMS, *SURFACES, 'auto'))}")
    method = options.get("frontier") or None
    if method is not None and method not in METHODS:
        raise ClipscaleError(f"unknown frontier {method!r} (valid: {', '.join(METHODS)})")
    default = Settings()
    return Settings(  # checks its own values
        method=method, bins=number("bins", int, default.bins), n_boot=number("boot", int, default.n_boot),
        level=number("level", float, default.level), seed=number("seed", int, default.seed), form=form,
        delta=number("delta", float, default.delta), cut=number("cut", float, None),
        noise=number("noise", float, default.noise),
    )  # fmt: skip


SURFACES = ("surface", "surface-effective")


def starts_of(options: dict[str, str]) -> int | None:
    """starts=all (every point of the form's grid) or N (the N best-scoring); -1: the form's own."""
    text = options.get("starts", "")
    if not text:
        return -1
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ClipscaleError(f"starts={text!r}: use all or a positive number")
    return n


def metric_of(options: dict[str, str], required: bool) -> tuple[str, str] | None:
    from scaling.fit.selection import split_metric

    dataset, metric = split_metric(options.get("dataset"), options.get("metric"))
    if dataset and metric:
        return dataset, metric
    if required or dataset or metric:
        raise ClipscaleError("name the metric: dataset=NAME metric=NAME (or metric=DATASET/METRIC)")
    return None


def list_of(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [v.strip() for v in text.split(",") if v.strip()]


def positive(text: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ClipscaleError(f"{key}={text!r} is not a number") from None
    if not value > 0:
        raise ClipscaleError(f"{key} must be positive, got {text}")
    return value


def targets_of(options: dict[str, str]) -> list[Any]:
    from scaling.fit.study import Target
    from scaling.units import parse_count

    def numbers(key: str) -> list[float]:
        try:
            return [float(v) for v in list_of(options.get(key, ""))]
        except ValueError:
            raise ClipscaleError(f"{key}={options[key]!r} is not a number") from None

    if "compute" in options:
        if "model" in options or "samples_seen" in options:
            raise ClipscaleError("give compute=, or model= and samples_seen=, not both")
        return [Target.of_compute(c) for c in numbers("compute")]
    models, samples = list_of(options.get("model", "")), list_of(options.get("samples_seen", ""))
    if not models or not samples:
        raise ClipscaleError("what to predict: model=NAME samples_seen=N, or compute=GMACS")
    gmacs = numbers("gmacs")
    if len(gmacs) > 1 or (gmacs and len(models) > 1):
        raise ClipscaleError("gmacs= is one number, for one model")
    counts = [parse_count(s, "samples_seen") for s in samples]
    return [Target.of_model(m, n, gmacs[0] if gmacs else None) for m in models for n in counts]


def metrics_named(engine: Any, filters: Sequence[str], text: str) -> list[tuple[str, str]]:
    from scaling.fit import selection

    if text == "all":
        return selection.metrics_of(engine, filters, include_all=True)
    chosen = []
    for item in list_of(text):
        dataset, _, metric = item.partition("/")
        if not dataset or not metric:
            raise ClipscaleError(f"metrics: {item!r} is not DATASET/METRIC")
        chosen.append((dataset, metric))
    return chosen


def target_named(text: str) -> Any:
    from scaling.fit.study import Target
    from scaling.units import parse_count

    model, at, samples = text.partition("@")
    if at:
        n = parse_count(samples, f"predict {text}")
        return Target.of_model(model, n)
    try:
        return Target.of_compute(float(text))
    except ValueError:
        raise ClipscaleError(f"predict: {text!r} is neither MODEL@SAMPLES nor a compute in GMACs") from None
