"""CLIPA's inverse-scaling view of a sweep: accuracy against the image tokens of pre-training,
one line per model size, before and after the full-token fine-tune, and against compute with
the fine-tune's compute added to its pre-training's (a second stage's stored compute is that
sum: scaling/store/ingest.py).

CLIPA's finding is that larger models lose less as the tokens shrink, so a large model at few
tokens can beat a small one at many for the same compute. CLIPA's published checkpoints
(``scaling import … --format clipa``) can be drawn beside a sweep's runs (``overlay=FAMILY``
of `scaling report`) where they report the same metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from scaling.store.query import configs, fetch, parse_filters
from scaling.tokens import image_tokens, reduced, text_tokens


@dataclass(frozen=True)
class TokenRun:
    """One run placed by the tokens of its pre-training (a fine-tune: its first stage's)."""

    id: str
    model: str
    stage: int  # 1: pre-trained at these tokens; 2: then fine-tuned at full size
    image_tokens: int
    text_tokens: int | None
    compute: float | None  # GMACs: pre-training plus fine-tune for a second stage
    value: float


@dataclass(frozen=True)
class InverseView:
    dataset: str
    metric: str
    runs: tuple[TokenRun, ...]
    published: tuple[TokenRun, ...] = ()  # the overlay family's runs of the same metric
    overlay: str | None = None


def view(engine: Engine, filters: Sequence[str], dataset: str, metric: str,
         overlay: str | None = None) -> InverseView | None:  # fmt: skip
    """The view of the family's runs of ``dataset/metric``; None unless it is a CLIPA sweep
    (a run trained at reduced tokens, or a second stage)."""
    runs, is_clipa = _token_runs(engine, [*filters, "status=succeeded"], dataset, metric)
    if not is_clipa or not runs:
        return None
    published: list[TokenRun] = []
    if overlay is not None:
        published, _ = _token_runs(engine, [f"family={overlay}", "status=succeeded"], dataset, metric)
    return InverseView(dataset, metric, tuple(runs), tuple(published), overlay)


def _token_runs(
    engine: Engine, filters: Sequence[str], dataset: str, metric: str
) -> tuple[list[TokenRun], bool]:
    rows, metrics = fetch(engine, parse_filters(filters))
    values = {pid: v for pid, d, m, v in metrics if d == dataset and m == metric and v is not None}
    found = configs(engine, [r["id"] for r in rows])
    parents = configs(engine, [str(c["parent"]) for c in found.values() if c.get("parent")])
    out, is_clipa = [], False
    for r in rows:
        config = found.get(r["id"], {})
        is_clipa = is_clipa or reduced(config) or "image_tokens" in config
        if r["id"] not in values:
            continue
        stage = int(config.get("stage") or 1)
        first = parents.get(str(config.get("parent")), config) if stage > 1 else config
        image, text = _tokens(first)
        if image is None:
            continue
        out.append(
            TokenRun(r["id"], r["model"], stage, image, text, r["compute_gmacs"], float(values[r["id"]]))
        )
    return out, is_clipa


def _tokens(config: Mapping[str, Any]) -> tuple[int | None, int | None]:
    # An imported run says its tokens; a grid point's follow from its model and settings.
    if "image_tokens" in config:
        return config.get("image_tokens"), config.get("text_tokens")
    return image_tokens(config), text_tokens(config)


# ---------------------------------------------------------------- the figure


def figure(v: InverseView) -> Any:
    """The view's plot (scaling.report renders it): the metric against image tokens, and
    against compute."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(11, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    tokens, compute = fig.subplots(1, 2)
    models = sorted({r.model for r in v.runs}, key=lambda m: _size(v.runs, m))
    cmap = matplotlib.colormaps["viridis"]
    colours = {m: cmap(i / max(1, len(models) - 1) * 0.85) for i, m in enumerate(models)}
    for m in models:
        for stage, style in ((1, "--"), (2, "-")):
            mine = [r for r in v.runs if r.model == m and r.stage == stage]
            _line(
                tokens,
                [(r.image_tokens, r.value) for r in mine],
                colours[m],
                style,
                stage,
                f"{m} {_STAGES[stage]}",
            )
            _line(compute, [(r.compute, r.value) for r in mine if r.compute], colours[m], style, stage, None)
    _overlay(tokens, v)
    label = f"{v.dataset}/{v.metric}"
    tokens.set(xscale="log", xlabel="image tokens in pre-training (patches kept + class token)",
               ylabel=label,
               title="Accuracy against image tokens (CLIPA's inverse scaling)")  # fmt: skip
    compute.set(xscale="log", xlabel="compute (GMACs): pre-training + fine-tune", ylabel=label,
                title="Accuracy against compute")  # fmt: skip
    counts = sorted({r.image_tokens for r in (*v.runs, *v.published)})
    tokens.set_xticks(counts, [str(n) for n in counts], minor=False)
    tokens.xaxis.set_minor_formatter(NullFormatter())
    tokens.legend(fontsize=7, loc="best")
    for ax in (tokens, compute):
        ax.grid(True, which="both", alpha=0.25)
    return fig


_STAGES = {1: "pre-trained", 2: "fine-tuned"}


def _size(runs: Sequence[TokenRun], model: str) -> float:
    # Models in order of the compute of their runs per token: smallest first.
    mine = [r.compute / r.image_tokens for r in runs if r.model == model and r.compute and r.stage == 1]
    return min(mine) if mine else float("inf")


def _line(
    ax: Any, points: list[tuple[Any, float]], colour: Any, style: str, stage: int, label: str | None
) -> None:
    if not points:
        return
    points.sort()
    ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", color=colour,
            markerfacecolor=colour if stage == 2 else "white", label=label)  # fmt: skip


def _overlay(ax: Any, v: InverseView) -> None:
    for stage, marker in ((1, "v"), (2, "^")):
        mine = [r for r in v.published if r.stage == stage]
        if mine:
            ax.scatter([r.image_tokens for r in mine], [r.value for r in mine], marker=marker,
                       color="tab:red",
                       label=f"{v.overlay} {_STAGES[stage]} (published)")  # fmt: skip


# ---------------------------------------------------------------- the report's section


def markdown(v: InverseView, image: str) -> list[str]:
    """The view's section of report.md: the plot and, per model and tokens, the metric before
    and after the fine-tune with the compute each took."""
    lines = [f"## Inverse scaling: {v.dataset}/{v.metric} against tokens", "", f"![tokens]({image})", "",
             "| model | image tokens | text tokens | pre-trained | fine-tuned "
             "| compute (GMACs, pre-training + fine-tune) |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    cells: dict[tuple[str, int, int | None], dict[int, TokenRun]] = {}
    for r in v.runs:
        cells.setdefault((r.model, r.image_tokens, r.text_tokens), {})[r.stage] = r
    for (model, image_n, text_n), stages in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        last = stages.get(2) or stages[1]
        spent = f"{last.compute:.4g}" if last.compute else ""
        before, after = _value(stages.get(1)), _value(stages.get(2))
        lines.append(f"| {model} | {image_n} | {text_n or ''} | {before} | {after} | {spent} |")
    if v.published:
        lines += ["", f"Published points of `{v.overlay}` drawn beside: {len(v.published)} runs "
                  f"({sum(1 for r in v.published if r.stage == 2)} fine-tuned)."]  # fmt: skip
    return [*lines, ""]


def _value(r: TokenRun | None) -> str:
    return f"{r.value:.4f}" if r is not None else ""
