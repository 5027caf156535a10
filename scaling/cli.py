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


if __name__ == "__main__":
    main()
