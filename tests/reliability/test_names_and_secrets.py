"""Names with shell and SQL metacharacters, quotes, spaces and newlines never reach a shell or
an SQL string; a password in a database or MLflow URL is never printed or written unmasked.

One real point, trained and evaluated on this machine, of a sweep whose name and run folder
hold every such character, stored in a real PostgreSQL reached by a URL with a password, and
logged to MLflow. Not covered: Slurm's own handling of such names (the job name clipscale
gives Slurm is sanitised, tested in tests/test_slurm.py through real sbatch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from conftest import DISPATCH_SWEEP, reliability_count

PASSWORD = "Pw-3xq9-secret"
# Quotes, a space, command substitution both ways, an SQL statement and comment, a newline.
NAME = 'it\'s "q" $(touch pwned) `touch pwned2`; DROP TABLE points; --\nnext line'
FOLDER = "runs dir 'q' \"d\" $(touch pwned3) ;|&"


def scaling(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # MLflow retries an unreachable server for minutes by default; a user can say so too.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/ml.db",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    command = [sys.executable, "-m", "scaling.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def with_password(url: str) -> str:
    return sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def test_metacharacter_names_and_a_password_url_run_a_point_end_to_end(
    world: Path, tmp_path: Path, postgres: str
) -> None:
    db = with_password(postgres)
    text = DISPATCH_SWEEP.format(cluster="local", name="NAME", root=world, runs="RUNS", samples="256")
    sweep = text.replace("name: NAME", f"name: {json.dumps(NAME)}").replace(
        "runs_root: RUNS", "runs_root: RUNS"
    )
    (tmp_path / "s.yaml").write_text(sweep.replace("RUNS", json.dumps(str(tmp_path / FOLDER))))
    said = []
    for args in (["launch", "sweep=s.yaml", "--db", db],
                 ["status", "sweep=s.yaml", "--db", db, "--watch", "--every", "1"]):  # fmt: skip
        out = scaling(*args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        said += [out.stdout, out.stderr]
    # The name came back whole through a bound filter, and every table is still there.
    out = scaling("runs", f"family={NAME}", "--db", db, "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["status"] == "succeeded" and row["family"] == NAME, row
    engine = sa.create_engine(postgres)
    assert {"points", "families", "metrics", "attempts"} <= set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert (tmp_path / FOLDER / row["id"] / "outcome.json").exists()
    # No shell ran any of it.
    assert not [p for p in tmp_path.rglob("pwned*")] and not Path("pwned").exists()
    # The password: in no output, no log, no run file, no MLflow param or tag.
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10 and (tmp_path / "ml.db").exists()
    leaks = [str(p) for p in written if PASSWORD.encode() in p.read_bytes()]
    leaks += [s for s in said if PASSWORD in s]
    assert not leaks, leaks
    reliability_count("files and outputs searched for a password", len(written) + len(said))
    reliability_count("passwords found unmasked", len(leaks))


def test_a_password_url_that_fails_is_one_masked_line(tmp_path: Path, postgres: str) -> None:
    closed = sa.make_url(postgres).set(port=9, password=PASSWORD).render_as_string(hide_password=False)
    cases = [
        ["runs", "--db", closed],
        ["fit", "family=x", "--db", closed],
        ["ingest", "sweep=toy", "--db", f"sqlite:///{tmp_path}/r.db", "--tracking-uri",
         f"http://user:{PASSWORD}@127.0.0.1:9/"],
    ]  # fmt: skip
    for args in cases:
        out = scaling(*args, cwd=tmp_path)
        assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
        assert PASSWORD not in out.stdout + out.stderr and "***" in out.stderr, (args, out.stderr)
    assert not list(tmp_path.iterdir())  # nothing written by the failures
    reliability_count("failing password URLs masked", len(cases))
