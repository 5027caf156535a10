"""The ``scaling`` command: each subcommand parses, calls one library function, prints."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click

from scaling.errors import ClipscaleError

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(fn: F) -> F:
    """Turn library errors into one line on stderr and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClipscaleError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def split_sweep(overrides: Sequence[str], default: str = "toy") -> tuple[str, list[str]]:
    """Take ``sweep=NAME`` out of the Hydra overrides; it picks the primary config."""
    sweep, rest = default, []
    for item in overrides:
        if item.startswith("sweep="):
            sweep = item.split("=", 1)[1]
        else:
            rest.append(item)
    if not sweep:
        raise ClipscaleError("sweep= needs a sweep name or a path to a sweep YAML file")
    return sweep, rest


_OVERRIDES = click.argument("overrides", nargs=-1)
_CONFIG_DIR = click.option(
    "--config-dir",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Extra config root (models/, datasets/, gpu/, cluster/ and sweeps/); searched first.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clipscale")
def main() -> None:
    """Plan, run and fit scaling laws of CLIP training (OpenCLIP on Slurm)."""


@main.command()
@_OVERRIDES
@_CONFIG_DIR
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Table for people; JSON or CSV records for programs.",
)
@_one_line_errors
def plan(overrides: tuple[str, ...], config_dir: tuple[str, ...], fmt: str) -> None:
    """List a sweep's points with exact samples seen, compute and GPU-hours.

    OVERRIDES are Hydra overrides: sweep=paper gpu=h100 model=ViT-B-32 train.lr=5e-4 ...
    """
    from scaling.plan import plan as make_plan

    sweep, rest = split_sweep(overrides)
    result = make_plan(sweep, rest, config_dir)
    records = result.records()
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        from scaling.tables import print_plan

        print_plan(result)


@main.command()
@click.option(
    "--root", type=click.Path(file_okay=False), default=None,
    help="Where to write toy/ (default: $CLIPSCALE_DATA_ROOT, else ./data), the toy sweep's data_root.",
)  # fmt: skip
@click.option(
    "--data", "names", multiple=True, help="Toy data set to write (repeatable; default: all toy-*)."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the whole world.")
@click.option("--image-size", default=32, show_default=True, help="Image side in pixels.")
@click.option("--force", is_flag=True, help="Rewrite sets that are already complete.")
@_CONFIG_DIR
@_one_line_errors
def toyworld(
    root: str | None,
    names: tuple[str, ...],
    seed: int,
    image_size: int,
    force: bool,
    config_dir: tuple[str, ...],
) -> None:
    """Generate the synthetic toy world: training shards and evaluation sets."""
    import os
    from pathlib import Path

    from scaling.config import Catalog, config_dirs
    from scaling.toyworld import write_world

    catalog = Catalog(config_dirs(config_dir))
    chosen = names or tuple(n for n in catalog.options("data") if n.startswith("toy-"))
    sizes = {}
    for name in chosen:
        spec = catalog.dataset(name)
        if not spec.shards.startswith(f"toy/{name}/"):
            raise ClipscaleError(f"data set {name!r} is not a toy data set (its shards are {spec.shards})")
        sizes[name] = spec.num_samples
    base = Path(root or os.environ.get("CLIPSCALE_DATA_ROOT") or "data")
    try:
        paths = write_world(base, sizes, seed, image_size, force)
    except OSError as e:
        raise ClipscaleError(f"cannot write the toy world under {base}: {e.strerror or e}") from None
    for path in paths:
        click.echo(str(path))


@main.command()
@_OVERRIDES
@_CONFIG_DIR
@click.option("--id", "point_id", default=None, help="Id of the point to run (see `scaling plan`).")
@_one_line_errors
def run(overrides: tuple[str, ...], config_dir: tuple[str, ...], point_id: str | None) -> None:
    """Train and evaluate one point of a sweep here, in the foreground.

    Pick the point with --id, or with overrides that leave exactly one point
    (sweep=toy model=toy-m data=toy-4k samples_seen=16k). A rerun resumes an
    unfinished run from its last checkpoint and returns a finished one as it is.
    """
    from scaling.plan import plan as make_plan
    from scaling.plan import select
    from scaling.tables import print_outcome, training_progress
    from scaling.train import run_dir, run_point

    sweep, rest = split_sweep(overrides)
    planned = make_plan(sweep, rest, config_dir)
    point = select(planned, point_id).point
    spec = planned.sweep
    with training_progress(point) as progress:
        outcome = run_point(point, spec.models[point.model], spec.eval, spec.runs_root, progress, quiet=True)
    print_outcome(outcome, run_dir(spec.runs_root, point))
    if outcome.status != "succeeded":
        click.echo(f"error: run {point.id} {outcome.status}: {outcome.error}", err=True)
        sys.exit(1)


_DB = click.option(
    "--db", default=None, help="Results store URL (default: $CLIPSCALE_DB, else sqlite:///results.db)."
)


@main.command(name="import")
@click.argument("table", type=click.Path(dir_okay=False))
@click.option("--family", required=True, help="Name of the family the table's runs join (e.g. paper).")
@_DB
@_one_line_errors
def import_(table: str, family: str, db: str | None) -> None:
    """Import a published results table (the scaling-laws paper's zeroshot_results.csv format)."""
    from pathlib import Path

    from scaling.store import connect, import_table

    count = import_table(connect(db), Path(table), family)
    click.echo(f"{count} runs in family {family}")


@main.command()
@_OVERRIDES
@_CONFIG_DIR
@_DB
@click.option(
    "--tracking-uri", default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
)  # fmt: skip
@click.option("--no-tracking", is_flag=True, help="Do not log runs to MLflow.")
@_one_line_errors
def ingest(
    overrides: tuple[str, ...], config_dir: tuple[str, ...], db: str | None, tracking_uri: str | None,
    no_tracking: bool,
) -> None:  # fmt: skip
    """Record a sweep's points and ingest every finished run's outcome into the store.

    Each ingested run is also logged to MLflow, under one parent run for the sweep.
    Idempotent: ingesting the same outcomes again changes nothing.
    """
    from scaling.plan import plan as make_plan
    from scaling.store import connect
    from scaling.sync import sync_sweep

    sweep, rest = split_sweep(overrides)
    planned = make_plan(sweep, rest, config_dir)
    counts = sync_sweep(planned, connect(db), _tracker(planned, tracking_uri, no_tracking))
    click.echo(f"sweep {sweep}: {counts['points']} points, {counts['ingested']} outcomes ingested")


@main.command(name="launch")
@_OVERRIDES
@_CONFIG_DIR
@_DB
@click.option("--retry-failed", is_flag=True, help="Also resubmit points whose last attempt failed.")
@click.option(
    "--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
    help="Never submit a point that has had this many attempts.",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Say what would be submitted; submit nothing.")
@_one_line_errors
def launch_(
    overrides: tuple[str, ...], config_dir: tuple[str, ...], db: str | None, retry_failed: bool,
    max_attempts: int, dry_run: bool,
) -> None:  # fmt: skip
    """Submit a sweep's points (cluster=slurm: job arrays; cluster=local: this machine)
    and return at once. Rerunning submits only what is missing; it is safe after a kill."""
    from scaling.dispatch import LaunchOptions, launch
    from scaling.plan import plan as make_plan
    from scaling.store import connect

    sweep, rest = split_sweep(overrides)
    planned = make_plan(sweep, rest, config_dir)
    options = LaunchOptions(retry_failed=retry_failed, max_attempts=max_attempts, dry_run=dry_run)
    report = launch(planned, connect(db), options)
    kind = planned.sweep.cluster.kind
    verb = "would submit" if dry_run else "submitted"
    click.echo(f"sweep {planned.sweep.name}: {verb} {report.submitted} points in {len(report.batches)} "
               f"{'job arrays' if kind == 'slurm' else 'local batches'}")  # fmt: skip
    for token, job, size in report.batches:
        click.echo(f"  {token}: {size} points" + (f", job {job}" if job else ""))
    for why, count in sorted(report.skipped.items()):
        click.echo(f"  not submitted: {count} {why}")
    if report.recovered or report.voided:
        click.echo(
            f"  settled an earlier launch: {report.recovered} adopted, {report.voided} never submitted"
        )
    if not dry_run and report.submitted:
        click.echo(f"follow with: scaling status sweep={sweep} --watch")


@main.command()
@_OVERRIDES
@_CONFIG_DIR
@_DB
@click.option("--watch", is_flag=True, help="Keep going until no point is pending or running.")
@click.option(
    "--every", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds between checks."
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).",
)
@click.option("--no-tracking", is_flag=True, help="Do not log runs to MLflow.")
@_one_line_errors
def status(
    overrides: tuple[str, ...], config_dir: tuple[str, ...], db: str | None, watch: bool, every: float,
    tracking_uri: str | None, no_tracking: bool,
) -> None:  # fmt: skip
    """Follow a launched sweep: one scheduler query for all its jobs, finished runs
    ingested into the store (and MLflow), a summary line."""
    from scaling.dispatch import reconcile
    from scaling.dispatch import watch as follow
    from scaling.plan import plan as make_plan
    from scaling.store import connect
    from scaling.tables import print_failures, sweep_status_line

    sweep, rest = split_sweep(overrides)
    planned = make_plan(sweep, rest, config_dir)
    engine = connect(db)
    track = _tracker(planned, tracking_uri, no_tracking)

    def show(summary: Any) -> None:
        click.echo(
            sweep_status_line(planned.sweep.name, summary)
            + (f" (+{summary.ingested} ingested)" if summary.ingested else "")
        )

    summary = follow(planned, engine, every, show, track) if watch else reconcile(planned, engine, track)
    if not watch:
        show(summary)
    print_failures(summary)


@main.command()
@_OVERRIDES
@_CONFIG_DIR
@_DB
@click.option("--point", "points", multiple=True, help="Cancel only this point (repeatable).")
@_one_line_errors
def cancel(
    overrides: tuple[str, ...], config_dir: tuple[str, ...], db: str | None, points: tuple[str, ...]
) -> None:
    """Cancel a sweep's pending and running points (or only some of them)."""
    from scaling.dispatch import cancel as stop
    from scaling.plan import plan as make_plan
    from scaling.store import connect

    sweep, rest = split_sweep(overrides)
    planned = make_plan(sweep, rest, config_dir)
    count = stop(planned, connect(db), points)
    click.echo(f"sweep {planned.sweep.name}: cancelled {count} points")


def _tracker(planned: Any, tracking_uri: str | None, no_tracking: bool) -> Callable[..., Any] | None:
    if no_tracking:
        return None
    from functools import partial

    from scaling import tracking

    uri = tracking.tracking_uri(tracking_uri)
    tracking.sweep_run(planned.sweep.name, uri, planned.sweep.description)
    return partial(tracking.log_run, uri=uri, sweep=planned.sweep.name)


@main.command()
@click.argument("filters", nargs=-1)
@_DB
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Write to this file (needed for parquet)."
)
@_one_line_errors
def runs(filters: tuple[str, ...], db: str | None, fmt: str, output: str | None) -> None:
    """Query stored runs: one row per point, a column per dataset/metric.

    FILTERS: family=paper sweep=toy status=succeeded 'model=[ViT-B-32,ViT-L-14]'
    data=LAION-2B samples_seen>=3B imagenet1k/acc1>0.6 ...
    """
    from scaling.store import runs as query

    if fmt == "parquet" and not output:
        raise ClipscaleError("--format parquet writes a binary file: give it with --output FILE")
    frame = query(db, *filters)
    if fmt == "table":
        from scaling.tables import print_runs

        print_runs(frame)
        return
    if fmt == "parquet":
        frame.to_parquet(output, index=False)
        return
    text = frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", indent=2) + "\n"
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)


if __name__ == "__main__":
    main()
