"""Rich tables for people at a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

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
    table = Table(
        title=f"sweep {spec.name}: {len(plan.points)} points",
        caption=f"GPU-hours on {spec.gpu.name} at {spec.gpu.mfu:.0%} of {spec.gpu.peak_tflops:g} TFLOP/s",
    )
    columns = ["id", "model", "data", *(["stage"] if staged else []), "samples seen", "epochs",
               "global batch", "lr", "warmup", "GMACs/sample", "compute (GMACs)", "GPU-hours"]  # fmt: skip
    for name in columns:
        left = name in ("id", "model", "data")
        table.add_column(name, justify="left" if left else "right", no_wrap=left)
    for p in plan.points:
        t = p.point.train
        table.add_row(
            p.point.id,
            p.point.model,
            p.point.data,
            *([str(p.point.stage)] if staged else []),
            format_count(p.point.samples_seen),
            str(t.epochs),
            f"{t.global_batch_size:,}",
            f"{t.lr:g}",
            f"{t.warmup:,}",
            f"{p.macs.total:.4g}",
            f"{p.compute_gmacs:.3e}",
            _hours(p.gpu_hours),
        )
    blanks = [""] * (len(columns) - 3)
    blanks[-2:] = [f"{plan.total_compute_gmacs:.3e}", _hours(plan.total_gpu_hours)]
    table.add_section()
    table.add_row("total", "", "", *blanks)
    console.print(table)


def _hours(hours: float) -> str:
    return f"{hours:,.1f}" if hours >= 10 else f"{hours:.2g}"
