"""The ``scaling`` command as users run it: acceptance commands and bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scaling.cli import main

SCALING = [sys.executable, "-m", "scaling.cli"]
REQUIRED = {"id", "model", "data", "samples_seen", "epochs", "train_num_samples", "global_batch_size",
            "lr", "warmup", "gmacs_per_sample", "compute_gmacs", "gpu_hours"}  # fmt: skip


def run(args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLIPSCALE_CACHE_DIR": str(cache)}
    return subprocess.run([*SCALING, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_plan_paper_as_json_lists_29_records(tmp_path: Path) -> None:
    out = run(["plan", "sweep=paper", "--format", "json"], tmp_path, tmp_path / "cache")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert len(records) == 29
    for r in records:
        assert set(r) >= REQUIRED
        assert r["compute_gmacs"] == pytest.approx(r["gmacs_per_sample"] * r["samples_seen"])
        assert r["gpu_hours"] > 0 and r["samples_seen"] == r["epochs"] * r["samples_per_epoch"]


def test_plan_csv_has_the_same_records_as_json(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    as_json = json.loads(run(["plan", "sweep=toy", "--format", "json"], tmp_path, cache).stdout)
    as_csv = list(
        csv.DictReader(io.StringIO(run(["plan", "sweep=toy", "--format", "csv"], tmp_path, cache).stdout))
    )
    assert [r["id"] for r in as_csv] == [r["id"] for r in as_json]
    assert [int(r["samples_seen"]) for r in as_csv] == [r["samples_seen"] for r in as_json]


def test_plan_table_shows_points_and_totals() -> None:
    result = CliRunner().invoke(main, ["plan", "sweep=toy", "gpu=h100"], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "sweep toy: 12 points" in result.output
    assert "toy-m_toy-64k_64k_" in result.output and "total" in result.output
    assert "H100" in result.output


def test_plan_table_of_a_two_stage_sweep_shows_stages() -> None:
    result = CliRunner().invoke(main, ["plan", "sweep=clipa"], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "sweep clipa: 32 points" in result.output and "stage" in result.output
    assert "_i224_t32_pd0_ft_" in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["sweep=paper", "model=ViT-Z-99"], "ViT-Z-99"),
        (["sweep=paper", "data=LAION-9B"], "LAION-9B"),
        (["sweep=nosuchsweep"], "nosuchsweep"),
        (["sweep=paper", "gpu=tpu9"], "tpu9"),
        (["sweep=paper", "cluster=k8s"], "k8s"),
        (["sweep=paper", "samples_seen=-3B"], "-3B"),
        (["sweep=paper", "samples_seen=0"], "0"),
        (["sweep=toy", "samples_seen=10"], "10"),
        (["sweep=toy", "exclude=[{model: [toy-s, toy-m, toy-l]}]"], "empty"),
        (["sweep=paper", "model=[ViT-B-32,"], "ViT-B-32,"),
        (["sweep=paper", "modle=ViT-B-32"], "modle"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args: list[str], named: str) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    out = run(["plan", *args, "--format", "json"], work, cache)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert list(work.iterdir()) == [] and not cache.exists()


def test_malformed_sweep_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  - gpu: a100\nmodel: [toy-s\n")
    out = run(["plan", f"sweep={bad}"], tmp_path, tmp_path / "cache")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "bad" in out.stderr and "Traceback" not in out.stderr


def test_every_command_has_help() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["--help"]).exit_code == 0
    for name, command in main.commands.items():
        assert command.help, f"command {name} has no help text"
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
