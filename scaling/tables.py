"""Rich tables for people at a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from scaling.grid import GridPoint
from scaling.outcome import Outcome
from scaling.plan import Plan
from scaling.units import format_count


def _console() -> Console:
    # Piped to a file or a pager, a table is cut to 80 columns unless told otherwise.
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 240))


def print_plan(plan: Plan, console: Console | None = None) -> None:
    """One row per point and a totals row; compute in GMACs as the paper counts it."""
    console = console or _console()
    spec = plan.sweep
    staged = any(p.point.stage > 1 for p in plan.points)
    traced = any(p.point.trajectory for p in plan.points)  # trained as trajectories
    typed = any(p.point.train.model_type != "clip" for p in plan.points)
    table = Table(
        title=f"sweep {spec.name}: {len(plan.points)} points",
        caption=f"{spec.gpu.hours} on {spec.gpu.name} at {spec.gpu.mfu:.0%} of {spec.gpu.peak_tflops:g} "
        "TFLOP/s",
    )
    columns = ["id", "model", *(["type"] if typed else []), "data", *(["stage"] if staged else []),
               *(["trunk", "from epoch", "cooldown"] if traced else []), "samples seen", "epochs",
               "global batch", "lr", "warmup", "GMACs/sample", "compute (GMACs)", spec.gpu.hours,
               "disk (GB)"]  # fmt: skip
    for name in columns:
        left = name in ("id", "model", "type", "data")
        table.add_column(name, justify="left" if left else "right", no_wrap=left)
    for p in plan.points:
        t = p.point.train
        table.add_row(
            p.point.id,
            p.point.model,
            *([t.model_type] if typed else []),
            p.point.data,
            *([str(p.point.stage)] if staged else []),
            *(_trajectory_cells(p.point) if traced else []),
            format_count(p.point.samples_seen),
            str(t.epochs),
            f"{t.global_batch_size:,}",
            f"{t.lr:g}",
            f"{t.warmup:,}",
            f"{p.macs.total:.4g}",
            f"{p.compute_gmacs:.3e}",
            _hours(p.gpu_hours),
            _hours(p.disk_gb),
        )
    blanks = [""] * (len(columns) - 3)
    blanks[-3:] = [
        f"{plan.total_compute_gmacs:.3e}",
        _hours(plan.total_gpu_hours),
        _hours(plan.total_disk_gb),
    ]
    table.add_section()
    table.add_row("total", "", "", *blanks)
    console.print(table)
    if plan.separate_gpu_hours is not None:
        console.print(saving_line(plan))


def saving_line(plan: Plan) -> str:
    """What a sweep trained as trajectories spends against the same points trained apart."""
    unit, ours, apart = plan.sweep.gpu.hours, plan.total_gpu_hours, plan.separate_gpu_hours or 0.0
    saved = f"{1 - ours / apart:.0%} less" if apart else "n/a"
    return (f"samples_mode={plan.sweep.samples_mode}: {_hours(ours)} {unit} against {_hours(apart)} {unit} "
            f"for the same points trained separately ({saved})")  # fmt: skip


def _trajectory_cells(p: GridPoint) -> list[str]:
    traj = p.trajectory
    if traj is None:
        return ["", "", ""]
    if traj.from_checkpoint:
        cooldown = "checkpoint" if traj.evaluated else "trunk"
    else:
        cooldown = f"{traj.cooldown_epochs} ep ({p.cooldown_share:.0%})"
    return [traj.trunk.rsplit("_", 1)[-1], str(traj.start_epoch), cooldown]


def _hours(hours: float) -> str:
    return f"{hours:,.1f}" if hours >= 10 else f"{hours:.2g}"


@contextlib.contextmanager
def training_progress(point: GridPoint) -> Iterator[Callable[[int, int, int], None]]:
    """A progress bar over the samples of a run, fed by the trainer's log lines."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("samples"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(f"{point.id} (starting)", total=point.samples_seen)
    epochs = point.train.epochs

    def update(epoch: int, done: int, per_epoch: int) -> None:
        bar.update(
            task, completed=epoch * per_epoch + done, description=f"{point.id} epoch {epoch + 1}/{epochs}"
        )

    with bar:
        yield update


def print_outcome(outcome: Outcome, directory: Path, console: Console | None = None) -> None:
    """The outcome of a run: status, samples, time, and each evaluation's metrics."""
    console = console or _console()
    seen = f"{outcome.samples_seen:,}" if outcome.samples_seen is not None else "?"
    rate = f", {outcome.samples_per_s:,.0f} samples/s" if outcome.samples_per_s else ""
    console.print(f"[bold]{outcome.id}[/bold]: {outcome.status}, {seen} samples seen{rate}")
    if outcome.metrics:
        table = Table()
        table.add_column("evaluation")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, metrics in outcome.metrics.items():
            for metric, value in metrics.items():
                table.add_row(name, metric, "" if value is None else f"{value:.4f}")
        console.print(table)
    console.print(f"run directory: {directory}")


def print_runs(
    metrics: list[str], rows: list[dict[str, Any]], console: Console | None = None, metric_columns: int = 6
) -> None:
    """Stored runs (``query.table``) as a table; wide metric sets are cut, with a hint to
    export them."""
    console = console or _console()
    shown = metrics[:metric_columns]
    table = Table(title=f"{len(rows)} runs")
    errors = any(r.get("error") for r in rows)
    for column in ("id", "family", "model", "data", "samples_seen", "compute_gmacs", "status", *shown,
                   *(["error"] if errors else [])):  # fmt: skip
        left = column in ("id", "family", "model", "data", "status", "error")
        table.add_column(column, justify="left" if left else "right", no_wrap=column == "id")
    for row in rows:
        head = [str(row[c]) for c in ("id", "family", "model", "data")]
        seen = "?" if row["samples_seen"] is None else format_count(row["samples_seen"])
        tail = [seen, _number(row["compute_gmacs"]), str(row["status"])]
        why = [str(row["error"] or "")[:300]] if errors else []
        table.add_row(*head, *tail, *(_number(row.get(c)) for c in shown), *why)
    if len(metrics) > len(shown):
        table.caption = f"{len(metrics) - len(shown)} more metric columns: use --format csv, json or parquet"
    console.print(table)


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return f"{value:.4g}"


_ORDER = ("succeeded", "diverged", "evaluating", "trained", "running", "pending", "requeued",
          "submitting", "failed", "timeout", "out_of_memory", "node_fail", "lost", "cancelled",
          "not submitted")  # fmt: skip


def sweep_status_line(name: str, summary: Any) -> str:
    """One line: a bar of finished points, the counts by state, hours spent vs planned."""
    done = summary.done
    width = 30
    filled = round(width * done / summary.total) if summary.total else width
    bar = "#" * filled + "-" * (width - filled)
    counts = ", ".join(
        f"{summary.counts[s]} {s}" for s in sorted(summary.counts, key=lambda s: (*_ORDER, s).index(s))
    )
    planned, unit = _hours(summary.hours_planned), summary.planned_unit
    if set(summary.spent) <= {unit}:
        hours = f"{_hours(summary.spent.get(unit, 0.0))} of {planned} {unit} planned"
    else:  # jobs that ran on CPUs against a plan costed on GPUs (or the other way): not comparable
        spent = ", ".join(f"{_hours(h)} {u}" for u, h in sorted(summary.spent.items()))
        hours = f"{spent} spent; {planned} {unit} planned"
    return f"sweep {name} [{bar}] {done}/{summary.total} done: {counts}; {hours}"


def print_failures(summary: Any, console: Console | None = None, limit: int = 10) -> None:
    console = console or _console()
    for point_id, reason in summary.failures[:limit]:
        console.print(f"  failed {point_id}: {reason}", markup=False, highlight=False)
    if len(summary.failures) > limit:
        console.print(f"  ... and {len(summary.failures) - limit} more failed points")


# ---------------------------------------------------------------- laws


def _ci(lo: float, hi: float, fmt: str = ".4f") -> str:
    return f"[{lo:{fmt}}, {hi:{fmt}}]"


def error_text(metric: str) -> str:
    from scaling.fit.selection import error_label

    return error_label(metric).replace("-", "−")


def _params(law: Any) -> str:
    cis = law.params_ci
    return ", ".join(f"{k} {v:.4g} {_ci(cis[k][0], cis[k][1], '.3g')}" for k, v in law.params.items())


def _convergence_text(law: Any) -> str:
    moved = ""
    if law.sensitivity:
        deltas = ", ".join(f"{d:g}" for d in law.sensitivity)
        moved = f"; refitted at δ {deltas}: " + "; ".join(
            ", ".join(f"{k} {v:.4g}" for k, v in p.items()) for p in law.sensitivity.values()
        )
    return (f"summed Huber δ={law.delta:g}, best of {law.tried} starts ({law.grid} scored) reached by "
            f"{law.reached}, converged: {law.converged}{moved}")  # fmt: skip


def print_surface(fitted: Any, record: dict[str, Any], console: Console | None = None) -> None:
    """The surface's parameters with intervals, how it converged, and any compute-optimal rows."""
    console = console or _console()
    s = fitted.surface
    lines = [f"{fitted.family} {fitted.dataset}/{fitted.metric}: {s.formula}"]
    lines += [f"  {k:7} {s.params[k]:.6g}  [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in s.params_ci.items()]
    lines.append(f"  {s.n_runs} runs, N = {s.size}; {_convergence_text(s)}")
    for row in record.get("compute_optimal", []):
        best = row["best_model"]
        lines.append(
            f"  C={row['compute']:.3g}: optimal N {row['gmacs_per_sample']:.4g} at D "
            f"{row['samples_seen']:.4g}; best model {best['model']} at {best['samples_seen']:.4g}"
        )
    for line in lines:
        console.print(line, markup=False, highlight=False)


def print_audit(audited: Any, console: Console | None = None) -> None:
    """Each held-out run: actual against predicted, the interval, covered, ARE."""
    console = console or _console()
    a, rec = audited.audit, audited.record()
    table = Table(title=f"audit of {audited.family} {audited.dataset}/{audited.metric}: {a.law.name} law "
                        f"fitted on {a.n_fit} runs, held out: {a.split}")  # fmt: skip
    for name in ("run", "compute", "actual", "predicted", "interval", "covered", "ARE", "frontier"):
        table.add_column(name, justify="left" if name == "run" else "right")
    for h in rec["held_out"]:
        table.add_row(h["run"], f"{h['compute']:.3g}", f"{h['actual']:.4f}", f"{h['predicted']:.4f}",
                      _ci(*h["predicted_ci"]), "yes" if h["covered"] else "no", f"{h['are']:.1%}",
                      "yes" if h["frontier"] else "")  # fmt: skip
    table.caption = (
        f"law below the split: {a.law.formula}\nARE of E = {error_text(audited.metric)} over the "
        f"{len(a.scored)} held-out frontier runs: {a.are:.2%} (all {len(a.held_out)}: {a.are_all:.2%}); "
        f"{a.coverage:.0%} covered by their {audited.settings.level:.0%} prediction intervals"
    )
    if audited.choice is not None:
        table.caption += f"\nform chosen below the split: {audited.choice.form}, {audited.choice.reason}"
    console.print(table)


def print_fits(fitted: Sequence[Any], console: Console | None = None, groups: Sequence[str] = ()) -> None:
    """One row per fitted law: the formula, α and β with intervals, fit quality, runs used
    (``groups``: the group each law was fitted on, named before its metric)."""
    console = console or _console()
    table = Table(title=f"laws of {fitted[0].family}" if fitted else "laws")
    from scaling.fit.powerlaw import Law

    power = all(isinstance(f.law, Law) for f in fitted)  # the paper's least-squares power laws
    heads = (
        ("dataset/metric", "E = β·C^α", "α CI", "β CI") if power else ("dataset/metric", "law", "parameters")
    )
    for name in (*heads, "R²", "runs", "frontier"):
        table.add_column(name, justify="left" if name in ("dataset/metric", "E = β·C^α", "law", "parameters")
                         else "right")  # fmt: skip
    for i, f in enumerate(fitted):
        law = f.law
        cells = (
            (law.formula, _ci(law.alpha_ci[0], law.alpha_ci[1]), _ci(law.beta_ci[0], law.beta_ci[1], ".4g"))
            if power
            else (f"{law.name}: {law.formula}", _params(law))
        )  # fmt: skip
        table.add_row(
            (f"{groups[i]}: " if groups else "") + f"{f.dataset}/{f.metric}", *cells,
            f"{law.r2:.3f}", f"{law.n_runs}" + (f" (+{len(f.skipped)} without)" if f.skipped else ""),
            f"{len(law.frontier)} ({law.method})",
        )  # fmt: skip
    if fitted:
        table.caption = f"E = {error_text(fitted[0].metric)}, C in the family's units (GMACs for sweeps); "
        table.caption += f"{fitted[0].law.level:.0%} bootstrap intervals"
        for f in fitted:
            if f.choice is not None:
                table.caption += f"\n{f.dataset}/{f.metric}: form {f.choice.form}, {f.choice.reason}"
            if not isinstance(f.law, Law):
                table.caption += f"\n{f.dataset}/{f.metric}: {_convergence_text(f.law)}"
        for f in fitted:
            if f.left_out_text:
                table.caption += f"\n{f.dataset}/{f.metric}: {f.left_out_text}"
        if fitted[0].left_out or fitted[0].checkpoints != "final":
            table.caption += f"\n{fitted[0].points}"
        sources = fitted[0].sources
        if len(sources) > 1:
            # The paper fits each data source on its own (LAION vs OpenAI's WIT).
            table.caption += (
                f"\nruns of {len(sources)} data sources fitted as one ({', '.join(sources)}): "
                "narrow with data=[...], or see one law per source with scaling report"
            )
    console.print(table)


def print_predictions(fitted: Any, predictions: Sequence[Any], console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"{fitted.family} {fitted.dataset}/{fitted.metric}: {fitted.law.formula}")
    for name in ("prediction", "compute (GMACs)", fitted.metric, f"{fitted.law.level:.0%} interval"):
        table.add_column(name, justify="left" if name == "prediction" else "right")
    for p in predictions:
        lo, hi = p.error_ci
        table.add_row(p.label, f"{p.compute:.3e}", f"{1 - p.error:.1%}", f"[{1 - hi:.1%}, {1 - lo:.1%}]")
    console.print(table)


def print_comparison(c: Any, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"{c.a.dataset}/{c.a.metric}: a vs b")
    for name in ("law", "filters", "E = β·C^α", "α CI", "β CI", "runs"):
        table.add_column(name)
    for name, f in (("a", c.a), ("b", c.b)):
        law = f.law
        table.add_row(name, " ".join(f.filters), law.formula, _ci(law.alpha_ci[0], law.alpha_ci[1]),
                      _ci(law.beta_ci[0], law.beta_ci[1], ".4g"), str(law.n_runs))  # fmt: skip
    lo, hi = c.alpha_diff_ci
    table.caption = (
        f"α_a − α_b = {c.alpha_diff:+.4f} {_ci(lo, hi)}; β_a / β_b = {c.beta_ratio:.3g} "
        f"{_ci(c.beta_ratio_ci[0], c.beta_ratio_ci[1], '.3g')}; "
        f"α_a < α_b in {c.p_alpha_a_lower:.1%} of resample pairs"
    )
    console.print(table)
    if c.decision is not None:
        console.print(c.decision if isinstance(c.decision, str) else c.decision.summary(), markup=False)


def print_suggestion(s: Any, console: Console | None = None) -> None:
    """Candidates best first: what each costs, where the law expects it, how much it narrows
    the interval at the target; the chosen ones within the budget marked."""
    console = console or _console()
    lo, hi = s.interval
    table = Table(title=f"what to run next for {s.target} (C={s.compute:.3g}): error {s.error:.4g} "
                  f"{_ci(lo, hi)}, width {s.width:.4g}")  # fmt: skip
    for name in ("chosen", "point", "GPU-h", "expected error", "width after", "narrowing", "per GPU-h"):
        table.add_column(name, justify="left" if name in ("chosen", "point") else "right")
    for g in s.gains:
        c = g.candidate
        table.add_row("✓" if g.chosen else "", c.id, f"{c.gpu_hours:.3g}", f"{g.expected:.4g}",
                      f"{g.width:.4g}", f"{g.narrowing:+.4g}", f"{g.per_hour:+.3g}")  # fmt: skip
    spent = sum(g.candidate.gpu_hours for g in s.chosen)
    table.caption = f"chosen: {len(s.chosen)} point(s), {spent:.3g} of {s.budget:g} GPU-hours"
    console.print(table)


def print_fit_history(family: str, rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"fit history of {family}")
    for name in ("fitted at", "dataset/metric", "selection", "runs", "α", "α CI", "β", "R²", "by"):
        table.add_column(
            name, justify="left" if name in ("fitted at", "dataset/metric", "selection") else "right"
        )
    for r in rows:
        ci = _ci(r["alpha_low"], r["alpha_high"]) if r["alpha_low"] is not None else "—"
        table.add_row(
            f"{r['fitted_at']:%Y-%m-%d %H:%M:%S}", f"{r['dataset']}/{r['metric']}", r["selection"],
            str(r["n_runs"]), f"{r['alpha']:.4f}", ci, f"{r['beta']:.4g}", f"{r['r2']:.3f}", r["trigger"],
        )  # fmt: skip
    console.print(table)


def print_refits(family: str, refits: Sequence[Any]) -> None:
    """One line per law of a family after new runs landed (laws not fitted yet: one line per reason)."""
    waiting: dict[tuple[str, str], list[str]] = {}
    for r in refits:
        if r.fitted is None:
            waiting.setdefault((r.group, r.reason), []).append(f"{r.dataset}/{r.metric}")
            continue
        law = r.fitted.law
        lo, hi = law.alpha_ci
        print(f"  law {family} [{r.group}] {r.dataset}/{r.metric}: {law.formula}, α {_ci(lo, hi)}, "
              f"R² {law.r2:.3f}, {law.n_runs} runs")  # fmt: skip
    for (group, reason), names in waiting.items():
        print(f"  no law yet for {family} [{group}] {', '.join(names)}: {reason}")
