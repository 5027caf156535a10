"""Fitted laws as a report: one Fig. 1-style plot per metric (PNG and SVG) and report.md/.html.

Everything is rendered in memory first and written afterwards, each file atomically, so a
failing plot leaves no half-written report behind.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import markdown
import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Annotation, Text
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

import scaling
from scaling import clipa
from scaling.clipa import InverseView
from scaling.errors import ClipscaleError
from scaling.files import atomic_file
from scaling.fit.laws import Fitted
from scaling.fit.powerlaw import Law
from scaling.fit.selection import Run
from scaling.fit.study import Section
from scaling.fit.surface import Surface
from scaling.units import format_count

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "8")
# Law colours stay clear of tab10, which colours the models.
LAW_COLOURS = ("black", "#c51b7d", "#01665e", "#8c6d31", "#542788")
LAW_STYLES = ("-", "--", "-.", ":")
SIZE = (7.0, 5.0)  # inches: a paper figure
FONT = 8


def write_report(
    sections: Sequence[Section], out: Path, title: str, filters: Sequence[str] = (),
    views: Sequence[InverseView] = (),
) -> list[Path]:  # fmt: skip
    """Write one plot per section (PNG and SVG), one per CLIPA inverse-scaling view, and
    report.md / report.html into out; returns the paths written."""
    if not sections:
        raise ClipscaleError("nothing to report: no fitted metric")
    for s in sections:
        if not s.fits:
            raise ClipscaleError(f"{s.dataset}/{s.metric}: no fitted law to report")
    stems = _stems(sections)
    files: dict[str, bytes] = {}
    for section, stem in zip(sections, stems, strict=True):
        files[f"{stem}.png"], files[f"{stem}.svg"] = render(section)
    text = markdown_report(sections, stems, title, filters)
    for v in views:
        stem = _safe(f"{v.dataset}__{v.metric}__tokens")
        files[f"{stem}.png"], files[f"{stem}.svg"] = render_view(v)
        text += "\n" + "\n".join(clipa.markdown(v, f"{stem}.png"))
    files["report.md"] = text.encode()
    files["report.html"] = html_page(title, text).encode()
    paths = []
    for name, data in files.items():
        with atomic_file(out / name, "wb") as f:
            f.write(data)
        paths.append(out / name)
    return paths


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _stems(sections: Sequence[Section]) -> list[str]:
    # File names keep to a safe alphabet; two metrics that map to one name get a suffix.
    stems: list[str] = []
    for s in sections:
        stem = base = _safe(f"{s.dataset}__{s.metric}")
        n = 1
        while stem in stems:
            n += 1
            stem = f"{base}-{n}"
        stems.append(stem)
    return stems


# ---------------------------------------------------------------- the plot


def render(section: Section) -> tuple[bytes, bytes]:
    """The section's plot as PNG and SVG bytes."""
    return _bytes(lambda: figure(section))


def render_view(view: InverseView) -> tuple[bytes, bytes]:
    """CLIPA's inverse-scaling view (scaling/clipa.py) as PNG and SVG bytes."""
    return _bytes(lambda: clipa.figure(view))


def _bytes(draw: Callable[[], Figure]) -> tuple[bytes, bytes]:
    # Text stays text in the SVG (searchable, editable for a paper); the hash salt keeps its ids stable.
    with matplotlib.rc_context({"font.size": FONT, "svg.fonttype": "none", "svg.hashsalt": "clipscale"}):
        fig = draw()
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=150)
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()


@dataclass(frozen=True)
class Styles:
    """How runs are drawn: a colour per model (by GMACs per sample), a marker per data set."""

    colours: dict[str, Any]
    markers: dict[str, str]

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Styles:
        gmacs: dict[str, list[float]] = {}
        for r in runs:
            gmacs.setdefault(r.model, []).append(r.gmacs_per_sample or r.compute / r.samples_seen)
        models = sorted(gmacs, key=lambda m: (float(np.median(gmacs[m])), m))
        cmap = matplotlib.colormaps["tab10" if len(models) <= 10 else "tab20"]
        colours = {m: cmap(i % cmap.N) for i, m in enumerate(models)}
        markers = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(sorted({r.data for r in runs}))}
        return cls(colours, markers)


def figure(section: Section) -> Figure:
    """Error against compute: every run, each group's frontier, law, band and predictions."""
    fig = Figure(figsize=SIZE, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    runs = _runs(section)
    styles = Styles.of(runs)
    _plot_runs(ax, runs, styles)
    law_handles = [_plot_group(ax, section, i, name, fitted) for i, (name, fitted) in enumerate(section.fits)]
    _axes(ax, section)
    _legends(fig, ax, styles, law_handles, section)
    notes = _plot_predictions(ax, section)
    fig.draw_without_rendering()  # lays the figure out: notes are placed in the axes' final size
    _place_notes(ax, canvas.get_renderer(), notes, _law_end(section))
    fig.draw_without_rendering()  # once more for the new ticks, then frozen: saving twice redoes none
    fig.set_layout_engine("none")
    return fig


def _runs(section: Section) -> list[Run]:
    seen: dict[str, Run] = {}
    for _, fitted in section.fits:
        for r in fitted.runs:
            seen.setdefault(r.id, r)
    return list(seen.values())


def _plot_runs(ax: Axes, runs: Sequence[Run], styles: Styles) -> None:
    for data, marker in styles.markers.items():
        mine = [r for r in runs if r.data == data]
        ax.scatter(
            [r.compute for r in mine], [1 - r.value for r in mine], s=26, marker=marker,
            c=[styles.colours[r.model] for r in mine], edgecolors="white", linewidths=0.4, zorder=3,
        )  # fmt: skip


def _law_style(i: int) -> tuple[str, str]:
    return LAW_COLOURS[i % len(LAW_COLOURS)], LAW_STYLES[i % len(LAW_STYLES)]


def _law_end(section: Section) -> float:
    """Where the drawn laws end: past the largest prediction (or run)."""
    return max(_group_end(section, name, f) for name, f in section.fits)


def _group_end(section: Section, name: str, fitted: Fitted) -> float:
    computes = [r.compute for r in fitted.runs] + [p.compute for g, p in section.predictions if g == name]
    return max(computes) * 1.6


def _plot_group(ax: Axes, section: Section, i: int, name: str, fitted: Fitted) -> tuple[Artist, ...]:
    """Frontier, law and band of one group; returns its legend handle (the three overlaid)."""
    colour, style = _law_style(i)
    law = fitted.law
    front = ax.plot(
        [p.compute for p in law.frontier], [p.error for p in law.frontier], linestyle="-", linewidth=0.6,
        color=colour, alpha=0.7, marker="o", markersize=9, markerfacecolor="none", markeredgecolor=colour,
        markeredgewidth=1.1, zorder=4,
    )[0]  # fmt: skip
    c = np.geomspace(min(r.compute for r in fitted.runs), _group_end(section, name, fitted), 200)
    (line,) = ax.plot(c, 10 ** law.log10_error(c), linestyle=style, color=colour, linewidth=1.4, zorder=5)
    handles: tuple[Artist, ...] = (line, front)
    if len(law.draws):  # without bootstrap draws (boot=0) there is no band
        band = law.error_band(c)
        ax.fill_between(c, band[0], band[1], color=colour, alpha=0.12, linewidth=0, zorder=2)
        handles = (Patch(facecolor=colour, alpha=0.12), *handles)
    surface = dict(section.surfaces).get(name)
    if isinstance(surface, Surface) and surface.has_optimum:
        # The surface's least error at each compute: the model size and samples seen to spend it on.
        n, d = surface.optimal(c)
        ax.plot(c, surface.error(n, d), linestyle=(0, (1, 1.5)), color=colour, linewidth=1.6, zorder=5)
    return handles


def _plot_predictions(ax: Axes, section: Section) -> list[tuple[Annotation, float]]:
    """A star with its interval per prediction, and its note (placed later) with the star's error."""
    colours = {name: _law_style(i)[0] for i, (name, _) in enumerate(section.fits)}
    notes = []
    for name, p in section.predictions:
        lo, hi = p.error_ci
        yerr = [[max(p.error - lo, 0)], [max(hi - p.error, 0)]] if math.isfinite(lo + hi) else None
        ax.errorbar(
            [p.compute], [p.error], yerr=yerr, marker="*", markersize=11, color=colours[name],
            markeredgecolor="white", markeredgewidth=0.5, capsize=2.5, elinewidth=1, zorder=6,
        )  # fmt: skip
        text = f"{_plain(p.label)}: {_pct_ci(1 - p.error, (1 - hi, 1 - lo), ' %')}"
        note = ax.annotate(
            text, xy=(p.compute, p.error), xytext=(1, 0), textcoords="axes fraction", ha="right",
            va="center", fontsize=FONT - 1, color=colours[name],
            arrowprops={"arrowstyle": "-", "color": colours[name], "linewidth": 0.5, "shrinkB": 5},
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            zorder=7,
        )  # fmt: skip
        notes.append((note, p.error))
    return notes


def _axes(ax: Axes, section: Section) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Compute (total GMACs)")
    ax.set_ylabel(_plain(f"1 − {section.metric} on {section.dataset}"))
    ax.autoscale_view()
    ax.yaxis.set_major_locator(FixedLocator(_error_ticks(*ax.get_ylim())))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", linewidth=0.5, alpha=0.5)
    ax.tick_params(labelsize=FONT - 1)


# Errors often span less than a decade: label more than the powers of ten, as few as make four ticks.
TICK_STEPS = (
    (1.0,),
    (1.0, 2.0, 5.0),
    (1.0, 2.0, 3.0, 5.0),
    tuple(range(1, 10)),
    tuple(np.arange(1.0, 10.0, 0.5)),
)


def _error_ticks(lo: float, hi: float) -> list[float]:
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for steps in TICK_STEPS:
        ticks = [float(s) * 10.0**e for e in decades for s in steps if lo <= float(s) * 10.0**e <= hi]
        if len(ticks) >= 4:
            break
    return ticks


def _legends(fig: Figure, ax: Axes, styles: Styles, law_handles: list[Any], section: Section) -> None:
    """Laws above the axes; models (colours) and data sets (markers) in a corner."""
    fig.legend(
        law_handles, [_law_label(name, f) for name, f in section.fits], loc="outside upper left",
        handler_map={tuple: HandlerTuple(ndivide=1)}, fontsize=FONT - 1, frameon=False, handlelength=2.6,
    )  # fmt: skip
    models = [_dot(colour, "o", m) for m, colour in styles.colours.items()]
    data = [_dot("0.45", marker, d) for d, marker in styles.markers.items()]
    if section.predictions:
        data.append(_dot("0.3", "*", f"prediction ({_level(section):.0%} CI)", size=8))
    if any(isinstance(s, Surface) and s.has_optimum for _, s in section.surfaces):
        data.append(Line2D([], [], linestyle=(0, (1, 1.5)), color="0.3", label="compute-optimal (E(N, D))"))
    rows = max(len(models), len(data))
    blank = Line2D([], [], linestyle="none", label="")
    handles = [*models, *[blank] * (rows - len(models)), *data, *[blank] * (rows - len(data))]
    # With predictions the right of the axes is kept clear for their notes and this legend.
    ax.legend(
        handles=handles, loc="upper right" if section.predictions else "best", ncols=2, fontsize=FONT - 1,
        framealpha=0.9, handletextpad=0.3, columnspacing=1.0,
    )  # fmt: skip


def _dot(colour: Any, marker: str, label: str, size: float = 6) -> Line2D:
    return Line2D([], [], linestyle="none", marker=marker, color=colour, markersize=size, label=_plain(label))


def _level(section: Section) -> float:
    return section.fits[0][1].law.level


def _law_label(name: str, fitted: Fitted) -> str:
    law = fitted.law
    if not isinstance(law, Law):  # another form than the least-squares power law
        front = f"{len(law.frontier)} frontier points"
        return f"{_plain(name)}: {law.name}, {law.formula}  (R² {law.r2:.2f}, {front})"
    lo, hi = law.alpha_ci
    ci = f"α {law.level:.0%} CI [{_signed(lo)}, {_signed(hi)}]" if math.isfinite(lo + hi) else "no CI"
    front = f"{len(law.frontier)} frontier points ({'all runs' if law.method == 'all' else law.method})"
    return f"{_plain(name)}: E = {law.beta:.3g}·C^{_signed(law.alpha)}  ({ci}, R² {law.r2:.2f}, {front})"


def _plain(text: str) -> str:
    # A $ in a name from the store would start matplotlib's math mode.
    return text.replace("$", r"\$")


def _signed(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}".replace("-", "−")


def _place_notes(ax: Axes, renderer: Any, notes: list[tuple[Annotation, float]], law_end: float) -> None:
    """Stack the prediction notes at the right edge, clear of the laws and of one another,
    and widen the x axis so the laws end left of them."""
    if not notes:
        ax.set_xlim(right=law_end * 1.2)
        return
    box = ax.get_window_extent(renderer)
    # Text.get_window_extent: the text alone (an annotation's own extent includes its connector).
    sizes = [Text.get_window_extent(n, renderer) for n, _ in notes]
    width, height = max(b.width for b in sizes) / box.width, max(b.height for b in sizes) / box.height
    left = math.log10(ax.get_xlim()[0])
    # The laws end at fraction 1 - width - a gap of the axes; solve the log axis for its right end.
    end = max(0.3, 1 - width - 0.06)
    ax.set_xlim(right=10 ** (left + (math.log10(law_end) - left) / end))
    lo, hi = (math.log10(y) for y in ax.get_ylim())
    ys = [(math.log10(error) - lo) / (hi - lo) for _, error in notes]
    top = _legend_bottom(ax, renderer) - height / 2
    for (note, _), y in zip(notes, _spread(ys, height * 1.35, height / 2 + 0.01, top), strict=True):
        note.xyann = (0.995, y)


def _legend_bottom(ax: Axes, renderer: Any) -> float:
    legend = ax.get_legend()
    if legend is None:
        return 1.0
    return float(ax.transAxes.inverted().transform(legend.get_window_extent(renderer))[0][1])


def _spread(ys: list[float], gap: float, low: float, high: float) -> list[float]:
    """Positions near ys, at least gap apart, kept within [low, high] where they fit."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = [min(max(ys[i], low), high) for i in order]
    for k in range(1, len(placed)):
        placed[k] = max(placed[k], placed[k - 1] + gap)
    overflow = placed[-1] - high
    if overflow > 0:  # pushed past the top: shift the stack down as far as the floor allows
        shift = min(overflow, placed[0] - low)
        placed = [p - shift for p in placed]
    out = [0.0] * len(ys)
    for i, p in zip(order, placed, strict=True):
        out[i] = p
    return out


# ---------------------------------------------------------------- the text


def markdown_report(
    sections: Sequence[Section], stems: Sequence[str], title: str, filters: Sequence[str]
) -> str:
    """The report as Markdown: an introduction, then per metric its plot and tables."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    selection = " ".join(f"`{f}`" for f in filters) or "all stored runs"
    noise = next((f.law.noise for s in sections for _, f in s.fits), 0.0)
    boot = f"with seed noise σ = {noise:g} in log10 error added to every run" if noise else "over runs"
    lines = [
        f"# {_cell(title)}",
        "",
        f"Runs: {selection}.",
        "",
        f"Generated by clipscale {scaling.__version__} on {when}. Each law is E = β·C^α, with E = 1 − metric "
        "and C the training compute in GMACs, fitted by least squares in log space through the frontier of "
        f"its group's runs; intervals are percentiles of a bootstrap {boot}.",
    ]  # fmt: skip
    for section, stem in zip(sections, stems, strict=True):
        lines += ["", *_section(section, stem)]
    return "\n".join(lines) + "\n"


def _section(s: Section, stem: str) -> list[str]:
    name = f"{s.dataset} / {s.metric}"
    lines = [f"## {_cell(name)}", "", f"![{_cell(name)}]({stem}.png)", "", f"Plot as [SVG]({stem}.svg).", ""]
    lines += ["### Laws", "", *_laws(s)]
    points = sorted({f.points for _, f in s.fits if f.left_out or f.checkpoints != "final"})
    if points:  # a sweep trained as trajectories: which of its points the laws stand on
        lines += ["", "Points fitted: " + "; ".join(points) + "."]
    skipped = [(g, len(f.skipped)) for g, f in s.fits if f.skipped]
    if skipped:
        lines += [
            "",
            "Runs without this metric, left out: " + ", ".join(f"{g} {n}" for g, n in skipped) + ".",
        ]
    left = [(g, f.left_out_text) for g, f in s.fits if f.left_out_text]
    if left:  # diverged runs, and runs of unknown compute: kept in the store, not in the laws
        lines += ["", "Left out of the laws: " + "; ".join(_cell(f"{g}: {text}") for g, text in left) + "."]
    if s.predictions:
        lines += ["", "### Predictions", "", *_predictions(s)]
    choices = [(g, f.choice) for g, f in s.fits if f.choice is not None]
    if choices:
        lines += ["", "### Form", ""] + [
            f"- {_cell(g)}: **{c.form}**, {_cell(c.reason)}." for g, c in choices
        ]
    if s.comparisons:
        lines += ["", "### Comparisons", "", *_comparisons(s)]
    if s.audits:
        lines += ["", "### Extrapolation audit", "", *_audits(s)]
    if s.surfaces:
        lines += ["", "### Error surface", "", *_surfaces(s)]
    lines += ["", "### Runs", "", *_runs_table(s)]
    return lines


def _surfaces(s: Section) -> list[str]:
    """Per group: E(N, D) over its runs and where it spends the largest run's compute (the
    dotted line of the plot); a group it cannot be fitted to says why."""
    rows, reasons = [], []
    for (g, surface), (_, f) in zip(s.surfaces, s.fits, strict=True):
        if not isinstance(surface, Surface):
            reasons.append(f"- {_cell(g)}: no surface ({_cell(surface)}).")
            continue
        p, top = surface.params, max(r.compute for r in f.runs)
        optimum = "—"
        if surface.has_optimum:
            n, d = surface.optimal(np.array([top]))
            optimum = f"{float(n[0]):.3g} GMACs × {format_count(float(d[0]))}"
        rows.append([_cell(g), f"{p['E']:.4g}", f"{p['A']:.4g}", f"{p['alpha']:.4f}", f"{p['B']:.4g}",
                     f"{p['beta']:.4f}", f"{top:.3g}", optimum])  # fmt: skip
    header = ["group", "E", "A", "α", "B", "β", "compute", "compute-optimal N × D"]
    intro = [
        "E(N, D) = E + A/N^α + B/D^β (N: GMACs per sample, D: samples seen), fitted the Epoch way on every "
        "run of the group; the plot's dotted line is its least error at each compute.",
        "",
    ]
    return [*intro, *(_table(header, rows, [False] + [True] * 7) if rows else []), *reasons]


def _audits(s: Section) -> list[str]:
    """Per group: the law refitted below the split and each held-out run against its prediction."""
    lines: list[str] = []
    for g, a in s.audits:
        if isinstance(a, str):
            lines += [f"{_cell(g)}: not audited ({_cell(a)}).", ""]
            continue
        rec = a.record()
        lines += [
            f"{_cell(g)}: {rec['form']} law fitted on the {rec['n_fit']} runs below the split "
            f"(held out: {_cell(rec['split'])}), {_cell(rec['law']['formula'])}. ARE of E over the "
            f"{rec['n_scored']} held-out frontier runs {rec['are']:.2%} (all {rec['n_held_out']}: "
            f"{rec['are_all']:.2%}); {rec['coverage']:.0%} inside their {rec['level']:.0%} prediction "
            "intervals.",
            "",
        ]  # fmt: skip
        rows = [
            [_cell(h["run"]), f"{h['compute']:.3g}", f"{h['actual']:.4f}", f"{h['predicted']:.4f}",
             f"[{h['predicted_ci'][0]:.4f}, {h['predicted_ci'][1]:.4f}]", "yes" if h["covered"] else "no",
             f"{h['are']:.1%}", "yes" if h["frontier"] else ""]
            for h in rec["held_out"]
        ]  # fmt: skip
        header = ["run", "compute", "actual", "predicted", "interval", "covered", "ARE", "frontier"]
        lines += [*_table(header, rows, [False, True, True, True, True, False, True, False]), ""]
    return lines[:-1]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    rule = ["---:" if r else ":---" for r in right]
    return [_row(header), _row(rule), *(_row(r) for r in rows)]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _laws(s: Section) -> list[str]:
    level = f"{_level(s):.0%}"
    rows = []
    for g, f in s.fits:
        law = f.law
        method = f"{law.method}, {law.bins} bins" if law.method == "binned" else law.method
        if not isinstance(law, Law):
            params = ", ".join(f"{k} {_ci_g(v, law.params_ci[k])}" for k, v in law.params.items())
            rows.append([_cell(g), f"{law.name}: {law.formula}", _cell(params), "", f"{law.r2:.3f}",
                         str(law.n_runs), str(len(law.frontier)), method])  # fmt: skip
            continue
        rows.append([
            _cell(g), law.formula, _ci(law.alpha, law.alpha_ci, 3), _ci_g(law.beta, law.beta_ci),
            f"{law.r2:.3f}", str(law.n_runs), str(len(law.frontier)), method,
        ])  # fmt: skip
    header = ["group", "law", f"α ({level} CI)", f"β ({level} CI)", "R²", "runs", "frontier points",
              "frontier"]  # fmt: skip
    return _table(header, rows, [False, False, True, True, True, True, True, False])


def _predictions(s: Section) -> list[str]:
    level, metric = f"{_level(s):.0%}", _cell(s.metric)
    rows = []
    for g, p in s.predictions:
        lo, hi = p.error_ci
        rows.append([
            _cell(g), _cell(p.label), _cell(p.model or "–"),
            format_count(p.samples_seen) if p.samples_seen else "–", f"{p.compute:.2e}",
            _pct_ci(1 - p.error, (1 - hi, 1 - lo), " %"), _ci(p.error, p.error_ci, 3),
        ])  # fmt: skip
    header = ["group", "prediction", "model", "samples seen", "compute (GMACs)", f"{metric} ({level} CI)",
              f"error ({level} CI)"]  # fmt: skip
    return _table(header, rows, [False, False, False, True, True, True, True])


def _comparisons(s: Section) -> list[str]:
    level = f"{_level(s):.0%}"
    rows = [
        [
            f"{_cell(_group(s, c.a))} vs {_cell(_group(s, c.b))}", _ci(c.alpha_diff, c.alpha_diff_ci, 3),
            _ci_g(c.beta_ratio, c.beta_ratio_ci), _pct(c.p_alpha_a_lower),
        ]
        for c in s.comparisons
    ]  # fmt: skip
    header = ["a vs b", f"α_a − α_b ({level} CI)", f"β_a / β_b ({level} CI)", "resamples with α_a < α_b"]
    return [*_table(header, rows, [False, True, True, True]), *_decisions(s)]


def _decisions(s: Section) -> list[str]:
    """Which side small scale picks and how often it picks the one that wins at the largest
    scale both reached (decision accuracy, DataDecide's measure)."""
    lines = []
    for c in s.comparisons:
        if c.decision is None:
            continue
        text = c.decision if isinstance(c.decision, str) else c.decision.summary()
        name = f"{_cell(_group(s, c.a))} (a) vs {_cell(_group(s, c.b))} (b)"
        lines += ["", f"Decision, {name}:", "", *(f"- {line}" for line in text.splitlines())]
    return lines


def _group(s: Section, fitted: Fitted) -> str:
    # A comparison holds the two fits, not their group names; a fit from elsewhere is named by its data.
    names = [g for g, f in s.fits if f is fitted]
    return names[0] if names else ", ".join(sorted({r.data for r in fitted.runs}))


def _runs_table(s: Section) -> list[str]:
    rows = []
    for g, f in s.fits:
        front = {p.run for p in f.law.frontier}
        for r in sorted(f.runs, key=lambda r: (r.compute, r.model)):
            rows.append([
                _cell(g), _cell(r.model), _cell(r.data), format_count(r.samples_seen), f"{r.compute:.2e}",
                _pct(r.value), "yes" if r.id in front else "no",
            ])  # fmt: skip
    header = ["group", "model", "data", "samples seen", "compute (GMACs)", _cell(s.metric), "frontier"]
    return _table(header, rows, [False, False, False, True, True, True, False])


def _ci(x: float, ci: tuple[float, float], digits: int) -> str:
    lo, hi = ci
    if not math.isfinite(lo + hi):
        return f"{x:.{digits}f}"
    return f"{x:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _ci_g(x: float, ci: tuple[float, float]) -> str:
    lo, hi = ci
    return f"{x:.3g} [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo + hi) else f"{x:.3g}"


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _pct_ci(x: float, ci: tuple[float, float], unit: str) -> str:
    lo, hi = ci
    text = f"{x * 100:.1f}{unit}"
    return f"{text} [{lo * 100:.1f}, {hi * 100:.1f}]" if math.isfinite(lo + hi) else text


def _cell(text: str) -> str:
    # Names come from the store: keep them from breaking a table or becoming HTML.
    return html.escape(text, quote=False).replace("|", "\\|").replace("*", "\\*").replace("`", "\\`")


STYLE = """\
body { font-family: system-ui, sans-serif; max-width: 64rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; }
code { background: #f2f2f2; padding: 0 0.2rem; }
"""


def html_page(title: str, text: str) -> str:
    """The Markdown report as one standalone HTML page (images by relative path)."""
    body = markdown.markdown(text, extensions=["tables"], output_format="html")
    head = f'<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>\n{STYLE}</style>'
    return f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{head}\n</head>\n<body>\n{body}\n</body>\n</html>\n'
