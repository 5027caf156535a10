"""A run whose training loss becomes NaN: flagged (status diverged, with why), kept in the
store, and left out of the family's laws, which say which run and why. Real training: the
shared toy grid's three trained points (conftest.toy_grid) and one more point at lr 1e30,
launched on this machine, that diverges in its first epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import reliability_count, wait_done
from test_fit import cli

from scaling.dispatch import launch
from scaling.plan import plan
from scaling.store import connect


def test_a_nan_loss_run_is_kept_flagged_and_left_out_of_the_law_with_why(
    toy_grid: Path, tmp_path: Path
) -> None:
    shutil.copy(toy_grid / "results.db", tmp_path / "results.db")  # the shared grid's store stays as it was
    sweep = (toy_grid / "next.yaml").read_text().replace(str(toy_grid / "runs"), str(tmp_path / "runs"))
    (tmp_path / "next.yaml").write_text(sweep)
    before = json.loads(cli(["fit", "sweep=next", "dataset=toy_shapes", "metric=acc1", "--format", "json"],
                            tmp_path).stdout)  # fmt: skip
    assert before["n_excluded"] == 0
    p = plan(str(tmp_path / "next.yaml"), ["samples_seen=[4k]", "train.lr=1e30"])
    engine = connect(f"sqlite:///{tmp_path / 'results.db'}")
    launch(p, engine)
    assert wait_done(p, engine).counts.get("diverged") == 1
    engine.dispose()
    (nan,) = [q.point.id for q in p.points]
    # Kept, and flagged with why.
    rows = json.loads(cli(["runs", "sweep=next", "--format", "json"], tmp_path).stdout)
    (row,) = [r for r in rows if r["id"] == nan]
    assert row["status"] == "diverged" and "nan" in row["error"].lower(), row
    # Left out of the law, which says which run and why; the law itself is unchanged.
    after = json.loads(cli(["fit", "sweep=next", "dataset=toy_shapes", "metric=acc1", "--format", "json"],
                           tmp_path).stdout)  # fmt: skip
    assert after["n_excluded"] == 1 and after["excluded"][0]["run"] == nan
    assert after["excluded"][0]["reason"].startswith("diverged: ") and "nan" in after["excluded"][0]["reason"]
    assert (after["n_runs"], after["alpha"], after["beta"]) == (
        before["n_runs"],
        before["alpha"],
        before["beta"],
    )
    text = cli(["fit", "sweep=next", "dataset=toy_shapes", "metric=acc1"], tmp_path).stdout
    assert "1 runs left out (1 diverged" in text and nan in text
    report = cli(["report", "sweep=next", f"out={tmp_path / 'report'}"], tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Left out of the laws: " in (tmp_path / "report" / "report.md").read_text()
    reliability_count("NaN-loss runs kept and left out of laws with why", 1)
