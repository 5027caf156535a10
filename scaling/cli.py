"""The ``scaling`` command: each subcommand parses, calls one library function, prints."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from scaling import lawargs
from scaling.errors import ClipscaleError

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(fn: F) -> F:
    """Turn library errors into one line on stderr and exit code 2; a SQLite store the failed
    command created (results or MLflow) is removed, so a failure leaves no file behind."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        new = [p for p in _sqlite_stores(kwargs) if not p.exists()]
        try:
            return fn(*args, **kwargs)
        except ClipscaleError as e:
            _remove(new)
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # a file or folder it was told to use: one line, no traceback
            _remove(new)
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _sqlite_stores(kwargs: dict[str, Any]) -> list[Path]:
    """The SQLite files a command with these options may create: its results store (--db)
    and, unless it does not track, its MLflow store (--tracking-uri)."""
    from urllib.parse import unquote

    urls = []
    if "db" in kwargs:  # only then: SQLAlchemy takes 0.2 s to import, which `scaling plan` needs not
        from scaling.store.db import store_url

        urls.append(store_url(kwargs["db"]))
    if "tracking_uri" in kwargs and not kwargs.get("no_tracking"):
        from scaling.tracking import tracking_uri

        urls.append(tracking_uri(kwargs["tracking_uri"]))
    prefix = "sqlite:///"
    return [Path(unquote(u[len(prefix) :].split("?", 1)[0])) for u in urls if u.startswith(prefix)]


def _remove(paths: Sequence[Path]) -> None:
    """Removes the stores a failed command created, if they are still empty: one that holds a
    family or an MLflow run by now is another process's too, and stays."""
    for path in paths:
        if path.exists() and _empty(path):
            for p in (path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))):
                p.unlink(missing_ok=True)


def _empty(path: Path) -> bool:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            held = [t for t in ("families", "runs") if t in tables]  # clipscale's, MLflow's
            return all(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] == 0 for t in held)
    except sqlite3.Error:
        return False  # not readable as a database: not ours to remove


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


class _Group(click.Group):
    """Click's usage errors (an unknown option, a bad --format, a missing argument) as one
    line too: click prints the usage, a hint and the error on four."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage(None):
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage(ctx):
            return super().invoke(ctx)


@contextmanager
def _one_line_usage(group: click.Context | None) -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # `scaling` alone: the help, as click shows it
    except click.UsageError as e:
        # Some errors (an option missing its value) carry no context: the subcommand named one.
        sub = group.invoked_subcommand if group is not None else None
        where = e.ctx.command_path if e.ctx is not None else " ".join(filter(None, ("scaling", sub)))
        click.echo(f"error: {e.format_message()} (see {where} --help)", err=True)
        sys.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
        model, policy = spec.models[point.model], spec.checkpoints
        outcome = run_point(point, model, spec.eval, spec.runs_root, progress, quiet=True, policy=policy)
    print_outcome(outcome, run_dir(spec.runs_root, point))
    if outcome.status != "succeeded":
        click.echo(f"error: run {point.id} {outcome.status}: {outcome.error}", err=True)
        sys.exit(1)


_DB = click.option(
    "--db", default=None, help="Results store URL (default: $CLIPSCALE_DB, else sqlite:///results.db)."
)


@main.command(name="import")
@click.argument("table", type=click.Path())
@click.option("--family", required=True, help="Name of the family the table's runs join (e.g. paper).")
@click.option(
    "--format", "kind", type=click.Choice(["paper", "columns", "openclip", "clip_benchmark", "clipa"]),
    default=None,
    help="paper: the scaling-laws paper's zeroshot_results.csv (the default); columns: any CSV, "
    "with --columns; openclip: open_clip's docs/openclip_results.csv, with model_profile.csv; "
    "clip_benchmark: a directory of CLIP_benchmark result JSON files; clipa: CLIPA's README "
    "tables (clipa_readme_tables.csv), for the inverse-scaling view of `scaling report`.",
)  # fmt: skip
@click.option(
    "--columns",
    default=None,
    help="FIELD=COLUMN,… for any CSV: fields model, params, gmacs, "
    "samples_seen, compute, data, data_size, and metrics as DATASET/METRIC (e.g. train/loss=loss).",
)
@click.option(
    "--flops-per-param",
    type=float,
    default=None,
    help="Derive samples seen from compute and params as C = k·N·D (6 for Chinchilla's FLOPs).",
)
@click.option(
    "--profile", type=click.Path(dir_okay=False), default=None,
    help="open_clip's model_profile.csv: GMACs per sample for --format openclip (default: beside "
    "TABLE) and for the runs --format clip_benchmark adds.",
)  # fmt: skip
@_DB
@_one_line_errors
def import_(
    table: str, family: str, kind: str | None, columns: str | None, flops_per_param: float | None,
    profile: str | None, db: str | None,
) -> None:  # fmt: skip
    """Import published results: the scaling-laws paper's zeroshot_results.csv, open_clip's
    results table (--format openclip), CLIP_benchmark's result files (TABLE a directory,
    --format clip_benchmark), or any CSV with --columns. The input is checked whole before the
    store is opened: a bad row is named by its line, and nothing is written. Importing the
    same input again changes nothing."""
    from pathlib import Path

    if not family.strip():
        raise ClipscaleError("--family needs a name (e.g. --family paper)")
    kind = kind or ("columns" if columns is not None else "paper")
    if (columns is not None) != (kind == "columns"):
        raise ClipscaleError("--columns goes with --format columns (and it needs them)")
    if profile is not None and kind not in ("openclip", "clip_benchmark"):
        raise ClipscaleError("--profile goes with --format openclip or clip_benchmark")
    if kind == "clip_benchmark":
        _import_clip_benchmark(Path(table), family, Path(profile) if profile else None, db)
        return
    if flops_per_param is not None and not flops_per_param > 0:
        raise ClipscaleError(f"--flops-per-param must be positive, got {flops_per_param:g}")
    points, metrics = _read_import(Path(table), kind, family, columns, flops_per_param, profile)
    from scaling.store import connect
    from scaling.store.ingest import import_rows

    count = import_rows(connect(db), Path(table), family, points, metrics)
    unknown = sum(1 for p in points if p.samples_seen is None)
    note = f" ({unknown} of unknown samples seen: left out of compute laws)" if unknown else ""
    click.echo(f"{count} runs in family {family}{note}")


def _import_clip_benchmark(directory: Any, family: str, profile: Any, db: str | None) -> None:
    from scaling.store import connect
    from scaling.store.clip_benchmark import candidates, read_results, rows
    from scaling.store.ingest import import_rows
    from scaling.store.openclip import read_profile

    results = read_results(directory)  # every file checked before the store is opened
    flops = read_profile(profile)[0] if profile is not None else {}
    engine = connect(db)
    from scaling.store.query import existing

    known = existing(engine, [c for r in results for c in candidates(r)])
    points, metrics, members = rows(results, known, flops)
    import_rows(engine, directory, family, points, metrics, members=members)
    click.echo(f"{len(results)} results of {len(points) + len(members)} runs in family {family} "
               f"({len(points)} new, {len(members)} already in the store)")  # fmt: skip


def _read_import(
    path: Any, kind: str, family: str, columns: str | None, flops_per_param: float | None, profile: str | None
) -> tuple[list[Any], list[Any]]:
    from pathlib import Path

    if not path.is_file():
        raise ClipscaleError(f"cannot read {path}: no such file")
    if kind == "openclip":
        from scaling.store.openclip import read_openclip

        return read_openclip(path, Path(profile) if profile else None)
    if kind == "clipa":
        from scaling.store.clipa import read_clipa

        return read_clipa(path)
    if kind == "columns":
        from scaling.store.columns import parse_mapping, read_columns

        return read_columns(path, parse_mapping(columns or ""), family, flops_per_param)
    from scaling.store.ingest import read_table

    return read_table(path)


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
    _check_outcomes(planned)
    counts = sync_sweep(planned, connect(db), _tracker(planned, tracking_uri, no_tracking))
    click.echo(f"sweep {sweep}: {counts['points']} points, {counts['ingested']} outcomes ingested")


def _check_outcomes(planned: Any) -> None:
    """Read every outcome before the store or MLflow is opened: a bad one fails the ingest
    with nothing written, not halfway through."""
    from scaling.outcome import OUTCOME_FILE
    from scaling.runspec import run_dir
    from scaling.store.ingest import outcome_rows

    for p in planned.points:
        directory = run_dir(planned.sweep.runs_root, p.point)
        if (directory / OUTCOME_FILE).is_file():
            outcome_rows(directory, p.macs.total)


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
    if report.limits:
        click.echo(f"  {report.limits}")
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
@click.option("--no-refit", "refit", flag_value=False, default=True, help="Do not refit the sweep's laws.")
@_one_line_errors
def status(
    overrides: tuple[str, ...], config_dir: tuple[str, ...], db: str | None, watch: bool, every: float,
    tracking_uri: str | None, no_tracking: bool, refit: bool,
) -> None:  # fmt: skip
    """Follow a launched sweep: one scheduler query for all its jobs, finished runs
    ingested into the store (and MLflow), a summary line. When runs land, the sweep's laws
    are refitted and added to the fit history (`scaling fit sweep=NAME --history`)."""
    from scaling.dispatch import reconcile
    from scaling.dispatch import watch as follow
    from scaling.fit import study
    from scaling.plan import plan as make_plan
    from scaling.store import connect
    from scaling.tables import print_failures, print_refits, sweep_status_line

    sweep, rest = split_sweep(overrides)
    planned = make_plan(sweep, rest, config_dir)
    engine = connect(db)
    track = _tracker(planned, tracking_uri, no_tracking)

    def show(summary: Any) -> None:
        click.echo(
            sweep_status_line(planned.sweep.name, summary)
            + (f" (+{summary.ingested} ingested)" if summary.ingested else "")
        )
        if summary.ingested and refit:
            try:
                refits = study.refit(engine, planned.sweep.name, landed=summary.landed)
                print_refits(planned.sweep.name, refits)
            except ClipscaleError as e:  # a law is a bonus: following the sweep goes on
                click.echo(f"  refit failed: {e}", err=True)

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
    count = stop(planned, connect(db, must_exist=True), points)  # nothing to cancel without a store
    click.echo(f"sweep {planned.sweep.name}: cancelled {count} points")


def _tracker(planned: Any, tracking_uri: str | None, no_tracking: bool) -> Callable[..., Any] | None:
    if no_tracking:
        return None
    from functools import partial

    from scaling import tracking

    uri = tracking.tracking_uri(tracking_uri)
    parent = tracking.sweep_run(planned.sweep.name, uri, planned.sweep.description)
    return partial(tracking.log_run, uri=uri, sweep=planned.sweep.name, parent=parent)


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
    if fmt == "parquet" and not output:
        raise ClipscaleError("--format parquet writes a binary file: give it with --output FILE")
    if fmt == "table":
        from scaling.store.db import connect
        from scaling.store.query import parse_filters, table
        from scaling.tables import print_runs

        parsed = parse_filters(filters)  # a bad filter is named before any store is opened
        print_runs(*table(connect(db, must_exist=True), parsed))
        return
    from scaling.store import runs as query

    frame = query(db, *filters)
    if fmt == "parquet":
        frame.to_parquet(output, index=False)
        return
    text = frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", indent=2) + "\n"
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)


# ---------------------------------------------------------------- laws


def _echo_json(value: Any) -> None:
    from scaling.outcome import json_safe  # an interval without bootstrap draws is NaN: null

    click.echo(json.dumps(json_safe(value), indent=2, ensure_ascii=False, default=str))


_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)


@main.command(name="fit")
@click.argument("args", nargs=-1)
@_DB
@_FORMAT
@click.option("--history", is_flag=True, help="Show how the family's laws moved as points landed.")
@_one_line_errors
def fit_(args: tuple[str, ...], db: str | None, fmt: str, history: bool) -> None:
    """Fit E = β·C^α (E = 1 − metric, C = total GMACs) on the frontier of a family's runs.

    ARGS: family=NAME (or sweep=NAME), run filters as for `scaling runs` ('data=[LAION-80M,LAION-2B]',
    model=..., samples_seen>=3B), dataset=imagenet1k metric=acc1 (without them: the family's
    headline metrics), frontier=binned|pareto|all (binned: the paper's 5-bin minimum), bins=5,
    boot=1000 (bootstrap resamples), level=0.95, seed=0, noise=σ (bootstrap by seed noise: σ is how
    much log10 error moves between seeds; default 0, runs resampled), group=source|data|model_type|all
    (one law per group, as `scaling report` groups). Each fit is added to the fit history.
    """
    from scaling.fit import history as fit_history
    from scaling.fit import laws, selection
    from scaling.store import connect, parse_filters
    from scaling.tables import print_fit_history, print_fits

    filters, options = lawargs.split_args(args, (*lawargs.FIT_KEYS, "group"))
    engine = connect(db, must_exist=True)
    chosen = lawargs.metric_of(options, required=False)
    if history:
        family = selection.family_of(parse_filters(filters))
        rows = fit_history.history(engine, family, *(chosen or (None, None)))
        _echo_json(rows) if fmt == "json" else print_fit_history(family, rows)
        return
    settings = lawargs.settings_of(options)
    if settings.form in lawargs.SURFACES:
        _fit_surface(engine, filters, chosen, settings, options, fmt)
        return
    if "group" in options:
        _fit_groups(engine, filters, chosen, settings, options["group"], fmt)
        return
    fitted = [laws.fit(engine, filters, d, m, settings) for d, m in ([chosen] if chosen else
              selection.metrics_of(engine, filters))]  # fmt: skip
    if not fitted:
        raise ClipscaleError(f"no succeeded run matches {' '.join(filters)}: nothing to fit")
    for f in fitted:
        fit_history.record_fit(engine, f, "fit")
    if fmt == "json":
        _echo_json(fitted[0].record() if chosen else [f.record() for f in fitted])
    else:
        print_fits(fitted)


def _fit_groups(engine: Any, filters: list[str], chosen: tuple[str, str] | None, settings: Any, how: str,
                fmt: str) -> None:  # fmt: skip
    """One law per data source (group=source), data set (data) or all runs (all), for each
    metric; a group that cannot be fitted is left out, and the table says why."""
    from scaling.fit import history as fit_history
    from scaling.fit import selection, study
    from scaling.tables import print_fits

    groups = selection.groups_of(engine, filters, how)
    results = [r for d, m in ([chosen] if chosen else selection.metrics_of(engine, filters))
               for r in study.fit_each(engine, filters, d, m, settings, groups)]  # fmt: skip
    fitted = [(r.group, r.fitted) for r in results if r.fitted is not None]
    if not fitted:
        why = "; ".join(f"{r.group}: {r.reason}" for r in results[:3])
        raise ClipscaleError(f"no group of {' '.join(filters)} has a law ({why})")
    for _, f in fitted:
        fit_history.record_fit(engine, f, "fit")
    key = how if how in ("source", "data", "model_type") else "group"
    if fmt == "json":
        _echo_json([{key: group, **f.record()} for group, f in fitted])
        return
    print_fits([f for _, f in fitted], groups=[group for group, _ in fitted])
    for r in results:
        if r.fitted is None:
            click.echo(f"no law for {r.group} ({r.dataset}/{r.metric}): {r.reason}")


def _fit_surface(engine: Any, filters: list[str], chosen: tuple[str, str] | None, settings: Any,
                 options: dict[str, str], fmt: str) -> None:  # fmt: skip
    from scaling.fit import laws

    if not chosen:
        raise ClipscaleError("the surface is fitted for one metric: dataset=NAME metric=NAME")
    budgets = [lawargs.positive(b, "budget") for b in lawargs.list_of(options.get("budget", ""))]
    size, effective = options.get("size", "gmacs"), settings.form == "surface-effective"
    starts = lawargs.starts_of(options)
    fitted = laws.fit_surface_runs(engine, filters, *chosen, settings, size, effective, starts)
    record = fitted.record(budgets)
    if fmt == "json":
        _echo_json(record)
    else:
        from scaling.tables import print_surface

        print_surface(fitted, record)


@main.command(name="audit")
@click.argument("args", nargs=-1)
@_DB
@_FORMAT
@_one_line_errors
def audit_(args: tuple[str, ...], db: str | None, fmt: str) -> None:
    """How well a law extrapolates: fit it on the runs below a compute cut (cut=COMPUTE, in the
    family's units) or without the largest model or data set (holdout=model|data), predict every
    held-out run, and show each prediction, its interval, whether it covers the actual value,
    and the absolute relative error (ARE) of E.

    ARGS: family=NAME, run filters, dataset= metric= (one metric), cut= or holdout=, and the
    fit settings of `scaling fit` (form=power|floor|saturating|broken|auto, frontier=, boot=, …).
    """
    from scaling.fit import laws
    from scaling.store import connect
    from scaling.tables import print_audit

    filters, options = lawargs.split_args(args, (*lawargs.FIT_KEYS, "holdout"))
    dataset, metric = lawargs.metric_of(options, required=True) or ("", "")
    settings = lawargs.settings_of(options)
    if settings.form in lawargs.SURFACES:
        raise ClipscaleError("audit audits laws of compute: form=power|floor|saturating|broken|auto")
    engine = connect(db, must_exist=True)
    result = laws.audit_runs(engine, filters, dataset, metric, replace(settings, cut=None), settings.cut,
                             options.get("holdout"))  # fmt: skip
    _echo_json(result.record()) if fmt == "json" else print_audit(result)


@main.command(name="predict")
@click.argument("args", nargs=-1)
@_DB
@_FORMAT
@_one_line_errors
def predict_(args: tuple[str, ...], db: str | None, fmt: str) -> None:
    """Predict a metric (with its interval) from a family's law, for a model at a number of
    samples seen or for a compute.

    ARGS: the law as for `scaling fit` (family=..., filters, dataset=, metric=, frontier=, ...)
    and the target: model=ViT-g-14 samples_seen=34.2e9 (lists give every combination; gmacs=
    overrides the model's GMACs per sample), or compute=9.9e12 (GMACs).
    """
    from scaling.fit import laws, study
    from scaling.store import connect
    from scaling.tables import print_predictions

    filters, options = lawargs.split_args(args, (*lawargs.FIT_KEYS, *lawargs.TARGET_KEYS))
    engine = connect(db, must_exist=True)
    dataset, metric = lawargs.metric_of(options, required=True) or ("", "")
    targets = lawargs.targets_of(options)
    fitted = laws.fit(engine, filters, dataset, metric, lawargs.settings_of(options))
    predictions = [study.resolve(engine, fitted, t) for t in targets]
    if fmt == "json":
        records = [p.record(fitted) for p in predictions]
        _echo_json(records[0] if len(records) == 1 else records)
    else:
        print_predictions(fitted, predictions)


@main.command(name="suggest")
@click.argument("args", nargs=-1)
@click.option(
    "--override", "overrides", multiple=True,
    help="A Hydra override of the plan the candidates come from, e.g. 'samples_seen=[16k,64k]' (repeatable).",
)  # fmt: skip
@_CONFIG_DIR
@_DB
@_FORMAT
@_one_line_errors
def suggest_(args: tuple[str, ...], overrides: tuple[str, ...], config_dir: tuple[str, ...], db: str | None,
             fmt: str) -> None:  # fmt: skip
    """Rank the points of a sweep's plan not run yet by how much each would narrow the
    prediction interval at a target per GPU-hour, and choose the best within a budget.

    ARGS: the law as for `scaling fit` (sweep=NAME or family=NAME, dataset=, metric=, ...),
    budget=GPU-HOURS, target=MODEL@SAMPLES or target=COMPUTE (GMACs), and plan=SWEEP (a
    sweep's name or YAML file; default: the family's name) for the candidate points.
    """
    from scaling.fit import selection, study
    from scaling.store import connect, parse_filters

    filters, options = lawargs.split_args(args, (*lawargs.FIT_KEYS, "budget", "target", "plan"))
    dataset, metric = lawargs.metric_of(options, required=True) or ("", "")
    if "target" not in options or "budget" not in options:
        raise ClipscaleError("what to aim at and spend: target=MODEL@SAMPLES|COMPUTE budget=GPU-HOURS")
    try:
        budget = float(options["budget"])
    except ValueError:
        raise ClipscaleError(f"budget={options['budget']!r} is not a number of GPU-hours") from None
    target, settings = lawargs.target_named(options["target"]), lawargs.settings_of(options)
    sweep = options.get("plan") or selection.family_of(parse_filters(filters))
    candidates = _candidates(sweep, overrides, config_dir)
    engine = connect(db, must_exist=True)
    result = study.suggest_next(engine, filters, dataset, metric, settings, candidates, target, budget)
    if fmt == "json":
        _echo_json(result.record())
    else:
        from scaling.tables import print_suggestion

        print_suggestion(result)


def _candidates(sweep: str, overrides: Sequence[str], config_dir: Sequence[str]) -> list[Any]:
    """The evaluated points of a sweep's plan, with their compute and cost."""
    from scaling.fit.suggest import Candidate
    from scaling.plan import plan as make_plan

    planned = make_plan(sweep, list(overrides), config_dir)
    return [
        Candidate(p.point.id, p.point.model, p.point.data, p.point.samples_seen, p.compute_gmacs, p.gpu_hours)
        for p in planned.points if p.point.evaluated
    ]  # fmt: skip


@main.command(name="compare")
@click.argument("args", nargs=-1)
@click.option(
    "--a", "a_filters", multiple=True, required=True, help="A filter of the first law (repeatable)."
)
@click.option(
    "--b", "b_filters", multiple=True, required=True, help="A filter of the second law (repeatable)."
)
@_DB
@_FORMAT
@_one_line_errors
def compare_(args: tuple[str, ...], a_filters: tuple[str, ...], b_filters: tuple[str, ...], db: str | None,
             fmt: str) -> None:  # fmt: skip
    """Compare two laws of one metric: α and β of each with intervals, and the difference.

    ARGS: what both share (family=paper dataset=mscoco_captions metric=image_retrieval_recall@5,
    frontier=...); --a and --b narrow each side, e.g. --a 'data=[LAION-80M,LAION-400M,LAION-2B]'
    --b data=CLIP-WIT, or --a family=mine --b family=paper.
    """
    from scaling.fit import laws
    from scaling.store import connect
    from scaling.tables import print_comparison

    filters, options = lawargs.split_args(args, lawargs.FIT_KEYS)
    dataset, metric = lawargs.metric_of(options, required=True) or ("", "")
    engine, settings = connect(db, must_exist=True), lawargs.settings_of(options)

    def side(extra: Sequence[str]) -> Any:
        names = [f for f in extra if f.startswith(("family=", "sweep="))]
        base = [f for f in filters if not (names and f.startswith(("family=", "sweep=")))]
        return laws.fit(engine, [*base, *extra], dataset, metric, settings)

    result = laws.compare(side(a_filters), side(b_filters))
    _echo_json(result.record()) if fmt == "json" else print_comparison(result)


@main.command(name="report")
@click.argument("args", nargs=-1)
@_DB
@_one_line_errors
def report_(args: tuple[str, ...], db: str | None) -> None:
    """Write plots (PNG and SVG, one per metric) and a Markdown/HTML report of a family's laws.

    ARGS: family=NAME and run filters, out=DIR (required), metrics=[imagenet1k/acc1,...] or
    metrics=all (default: the headline metrics), predict=[ViT-g-14@34.2B,...] (model@samples
    or a compute in GMACs; default: 10× the largest run), group=source|data|model_type|all (one
    law per data source, e.g. LAION vs CLIP-WIT; per data set; per model type, CLIP vs SigLIP vs
    CoCa; or one for all runs), overlay=FAMILY (CLIPA's published runs, imported with --format
    clipa, drawn on a CLIPA sweep's inverse-scaling view), and the fit settings of `scaling fit`.
    """
    from pathlib import Path

    from scaling import clipa
    from scaling.fit import history as fit_history
    from scaling.fit import selection, study
    from scaling.report import write_report
    from scaling.store import connect, parse_filters

    filters, options = lawargs.split_args(
        args, (*lawargs.FIT_KEYS, "out", "metrics", "predict", "group", "overlay")
    )
    if not options.get("out"):
        raise ClipscaleError("where to write: out=DIR")
    engine = connect(db, must_exist=True)
    family = selection.family_of(parse_filters(filters))
    metrics = lawargs.metrics_named(engine, filters, options.get("metrics", ""))
    groups = selection.groups_of(engine, filters, options.get("group", "source"))
    targets = [lawargs.target_named(t) for t in lawargs.list_of(options.get("predict", ""))]
    sections = study.study(engine, filters, metrics, groups, targets, lawargs.settings_of(options))
    overlay = options.get("overlay")
    views = [v for s in sections if (v := clipa.view(engine, filters, s.dataset, s.metric, overlay))]
    if overlay and not any(v.published for v in views):
        why = "this family has no run at reduced tokens nor a second stage" if not views else (
            f"it has no run of {', '.join(f'{v.dataset}/{v.metric}' for v in views)}")  # fmt: skip
        raise ClipscaleError(f"overlay={overlay}: nothing to draw beside: {why}")
    paths = write_report(sections, Path(options["out"]), f"Scaling laws of {family}", filters, views)
    for section in sections:
        for _, f in section.fits:
            fit_history.record_fit(engine, f, "fit")
    click.echo(f"report: {Path(options['out']) / 'report.html'} ({len(paths)} files)")
    for path in paths:
        if path.suffix == ".png":
            click.echo(f"  plot: {path}")


if __name__ == "__main__":
    main()
