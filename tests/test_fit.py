"""The fitter: the paper's laws reproduced, frontiers, bootstrap coverage, predictions,
comparisons, the fit history, and bad input as one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from scaling.errors import ClipscaleError
from scaling.fit import fit_law, history, laws, study
from scaling.fit.frontier import batch_sums, frontier, ols_from_sums, sort_runs
from scaling.store import connect, import_table
from scaling.store.query import fetch, parse_filters

SCALING = [sys.executable, "-m", "scaling.cli"]
LAION = "data=[LAION-80M,LAION-400M,LAION-2B]"
SAMPLES_34B = 407_332_084 * 84  # the trainer's real count for the paper's "34B"
COLUMNS = ["arch", "samples_seen", "gmacs", "upstream_dataset", "downstream_dataset", "acc1",
           "image_retrieval_recall@5", "name"]  # fmt: skip


def cli(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLIPSCALE_DB": f"sqlite:///{cwd}/results.db"}
    return subprocess.run([*SCALING, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def write_table(path: Path, rows: Sequence[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({"downstream_dataset": "imagenet1k", "name": "run", **r})
    return path


def law_table(path: Path, alpha: float = -0.2, beta: float = 8.0, sigma: float = 0.01, seed: int = 0) -> Path:
    """A 3 models × 2 data × 3 samples grid whose best runs follow E = β·C^α."""
    rng = np.random.default_rng(seed)
    rows = []
    for arch, gmacs in (("m-s", 2.0), ("m-m", 8.0), ("m-l", 32.0)):
        for data, penalty in (("toy-4k", 0.08), ("toy-64k", 0.0)):
            for samples in (1e6, 1e7, 1e8):
                error = beta * (gmacs * samples) ** alpha * 10 ** (penalty + rng.normal(0, sigma))
                rows.append({"arch": arch, "samples_seen": samples, "gmacs": gmacs, "upstream_dataset": data,
                             "acc1": 1 - error, "image_retrieval_recall@5": 1 - error / 2})  # fmt: skip
    return write_table(path, rows)


# ---------------------------------------------------------------- the paper, reproduced


@pytest.fixture
def paper(tmp_path: Path, shared: Path) -> Path:
    out = cli(["import", str(shared / "zeroshot_results.csv"), "--family", "paper"], tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path


@pytest.mark.shared
def test_paper_laws_are_reproduced_exactly(paper: Path) -> None:
    engine = connect(f"sqlite:///{paper}/results.db")
    openclip = laws.fit(engine, ["family=paper", LAION], "imagenet1k", "acc1")
    assert round(openclip.law.alpha, 4) == -0.1114 and round(openclip.law.beta, 3) == 5.858
    assert openclip.law.method == "binned" and len(openclip.law.frontier) == 5 and openclip.law.n_runs == 29
    assert openclip.law.alpha_ci[0] < openclip.law.alpha < openclip.law.alpha_ci[1]
    openai = laws.fit(engine, ["family=paper", "data=CLIP-WIT"], "imagenet1k", "acc1")
    # Three runs at one data scale: the paper fits them through all points.
    assert round(openai.law.alpha, 4) == -0.1638 and round(openai.law.beta, 2) == 23.18
    assert openai.law.method == "all" and openai.law.n_runs == 3
    coco = laws.fit(engine, ["family=paper", LAION], "mscoco_captions", "image_retrieval_recall@5")
    assert round(coco.law.alpha, 4) == -0.0794 and round(coco.law.beta, 2) == 2.75
    g14 = study.resolve(
        engine, openclip, study.Target("g/14 34B", model="ViT-g-14", samples_seen=SAMPLES_34B)
    )
    assert g14.gmacs_per_sample == 290.74 and round(100 * (1 - g14.error), 1) == 79.1
    # G/14 has no run in the table: its GMACs come from the paper's GMACs table.
    big = study.Target("G/14 68B", model="ViT-bigG-14", samples_seen=2 * SAMPLES_34B, gmacs=532.92)
    assert round(100 * (1 - study.resolve(engine, openclip, big).error), 1) == 81.9
    # The paper's finding: OpenCLIP scales better on retrieval, OpenAI CLIP on ImageNet.
    assert laws.compare(coco, laws.fit(engine, ["family=paper", "data=CLIP-WIT"], "mscoco_captions",
                                       "image_retrieval_recall@5")).alpha_diff < 0  # fmt: skip
    assert laws.compare(openclip, openai).alpha_diff > 0


@pytest.mark.shared
def test_acceptance_commands(paper: Path) -> None:
    base = ["family=paper", LAION, "dataset=imagenet1k", "metric=acc1"]
    out = cli(["fit", *base, "frontier=binned", "--format", "json"], paper)
    assert out.returncode == 0, out.stderr
    law = json.loads(out.stdout)
    assert {"alpha", "beta", "alpha_ci", "beta_ci", "n_runs", "frontier"} <= set(law)
    assert round(law["alpha"], 4) == -0.1114 and law["n_runs"] == 29 and len(law["frontier"]) == 5
    assert law["alpha_ci"][0] < law["alpha"] < law["alpha_ci"][1]
    wit = cli(["fit", "family=paper", "data=[CLIP-WIT]", "dataset=imagenet1k", "metric=acc1",
               "frontier=binned", "--format", "json"], paper)  # fmt: skip
    assert wit.returncode == 0, wit.stderr
    assert round(json.loads(wit.stdout)["alpha"], 4) == -0.1638
    out = cli(["predict", *base, "model=ViT-g-14", "samples_seen=34.2e9", "--format", "json"], paper)
    assert out.returncode == 0, out.stderr
    pred = json.loads(out.stdout)
    assert round(100 * pred["predicted"], 1) == 79.1
    assert pred["predicted_ci"][0] < pred["predicted"] < pred["predicted_ci"][1]
    cmp = cli(["compare", "family=paper", "dataset=imagenet1k", "metric=acc1", "--a", LAION, "--b",
               "data=CLIP-WIT", "--format", "json"], paper)  # fmt: skip
    assert cmp.returncode == 0, cmp.stderr
    result = json.loads(cmp.stdout)
    assert result["alpha_diff"] == pytest.approx(-0.1114 + 0.1638, abs=1e-4)
    assert result["alpha_diff_ci"][0] < result["alpha_diff"] < result["alpha_diff_ci"][1]


# ---------------------------------------------------------------- frontiers


def _reference_binned(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    # The paper's method as its notebook writes it, with numpy's own histogram edges.
    _, edges = np.histogram(x, bins=bins, range=(x.min(), x.max() + 0.1))
    xs, ys = [], []
    for i in range(bins):
        inside = (x >= edges[i]) & (x < edges[i + 1])
        if inside.any():
            xs.append((edges[i] + edges[i + 1]) / 2)
            ys.append(y[inside].min())
    return np.array(xs), np.array(ys)


@pytest.mark.parametrize("seed", range(5))
def test_binned_frontier_matches_numpy_histogram(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(9, 13, 40), rng.normal(-0.5, 0.1, 40)
    order = sort_runs(x, y)
    got = frontier(x[order], y[order], "binned", 5)
    want_x, want_y = _reference_binned(x, y, 5)
    assert np.array_equal(got.log_c, want_x) and np.array_equal(got.log_e, want_y)
    assert np.array_equal(y[order][got.runs], got.log_e)


def test_pareto_frontier_is_the_running_minimum() -> None:
    x = np.log10([1, 2, 2, 3, 4, 5, 6.0])
    y = np.log10([0.9, 0.8, 0.7, 0.75, 0.7, 0.5, 0.6])
    order = sort_runs(x, y)
    got = frontier(x[order], y[order], "pareto")
    assert np.allclose(10**got.log_e, [0.9, 0.7, 0.5])  # ties and non-improvements dropped
    assert np.allclose(10**got.log_c, [1, 2, 5])


@pytest.mark.parametrize("method", ["binned", "pareto", "all"])
def test_bootstrap_batch_fits_like_the_single_fit(method: str) -> None:
    # The vectorised resample fit must be the same fit as the reported one.
    rng = np.random.default_rng(3)
    x, y = rng.uniform(9, 13, 60), rng.normal(-0.5, 0.1, 60) - 0.1 * rng.uniform(9, 13, 60)
    order = sort_runs(x, y)
    x, y = x[order], y[order]
    front = frontier(x, y, method, 5)
    want = np.polyfit(front.log_c, front.log_e, 1)
    slope, intercept, _ = ols_from_sums(batch_sums(x, y, np.ones((1, len(x)), dtype=np.int64), method, 5))
    assert slope[0] == pytest.approx(want[0], rel=1e-9) and intercept[0] == pytest.approx(want[1], rel=1e-9)


# ---------------------------------------------------------------- intervals


@pytest.mark.parametrize(("method", "sigma"), [("binned", 0.01), ("binned", 0.03), ("all", 0.02)])
def test_interval_covers_the_true_alpha(method: str, sigma: float) -> None:
    """Synthetic laws E = 6·C^−0.11 × log-normal noise, 30 runs over three decades of compute."""
    alpha, trials, covered = -0.11, 200, 0
    for t in range(trials):
        rng = np.random.default_rng(t)
        c = 10 ** rng.uniform(10, 13, 30)
        law = fit_law(c, 6 * c**alpha * 10 ** rng.normal(0, sigma, 30), method=method, n_boot=500, seed=t)
        covered += law.alpha_ci[0] <= alpha <= law.alpha_ci[1]
    assert covered / trials >= 0.90


def test_seed_noise_interval_covers_the_truth_and_narrows_with_each_run_added() -> None:
    """Six runs over one decade with log10 seed noise σ = 0.01 (a model's samples-seen axis):
    the seed-noise bootstrap told σ covers the true α, and every run added beyond the last
    narrows the interval at 30× the largest run, wherever it lands."""
    alpha, sigma, trials, covered, narrowed = -0.2, 0.01, 200, 0, 0
    for t in range(trials):
        rng = np.random.default_rng(t)
        c = np.geomspace(1e3, 1e4, 7)
        e = 2.0 * c**alpha * 10 ** rng.normal(0, sigma, 7)
        law = fit_law(c[:6], e[:6], method="all", n_boot=400, seed=t, noise=sigma)
        covered += law.alpha_ci[0] <= alpha <= law.alpha_ci[1]
        added = fit_law(c, e, method="all", n_boot=400, seed=t, noise=sigma)
        (lo, hi), (lo2, hi2) = law.predict(3e5)[1], added.predict(3e5)[1]
        narrowed += hi2 - lo2 < hi - lo
    assert law.noise == sigma and 0.90 <= covered / trials <= 0.99
    assert narrowed == trials


def test_prediction_interval_contains_the_law_and_widens_with_extrapolation() -> None:
    rng = np.random.default_rng(0)
    c = 10 ** rng.uniform(10, 12, 40)
    law = fit_law(c, 6 * c**-0.1 * 10 ** rng.normal(0, 0.02, 40), method="all")
    near, (lo1, hi1) = law.predict(1e11)
    far, (lo2, hi2) = law.predict(1e15)
    assert lo1 < near < hi1 and lo2 < far < hi2
    assert np.log10(hi2 / lo2) > 3 * np.log10(hi1 / lo1)
    assert far == pytest.approx(6 * 1e15**-0.1, rel=0.15)


# ---------------------------------------------------------------- the fit history


def test_fit_history_records_a_law_once_per_change(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path}/r.db")
    full = law_table(tmp_path / "full.csv")
    with open(full) as f:
        rows = list(csv.DictReader(f))
    write_table(tmp_path / "part.csv", rows[:9])
    import_table(engine, tmp_path / "part.csv", "mine")
    first = study.refit(engine, "mine")
    assert [(r.group, r.dataset, r.metric) for r in first] == [("toy", "imagenet1k", "acc1")]
    assert first[0].recorded and first[0].fitted is not None
    assert not study.refit(engine, "mine")[0].recorded  # nothing landed: no new row
    import_table(engine, full, "mine")
    second = study.refit(engine, "mine")
    assert second[0].recorded and second[0].fitted is not None and second[0].fitted.law.n_runs == 18
    rows_now = history.history(engine, "mine", "imagenet1k", "acc1")
    assert [r["n_runs"] for r in rows_now] == [9, 18]
    assert rows_now[1]["alpha"] == pytest.approx(second[0].fitted.law.alpha)
    assert all(r["trigger"] == "ingest" for r in rows_now)


def test_a_refit_after_points_land_refits_only_their_groups(tmp_path: Path) -> None:
    """status refits the laws of the groups that hold a point it stored; the others stand."""
    engine = connect(f"sqlite:///{tmp_path}/r.db")
    with open(law_table(tmp_path / "full.csv")) as f:
        rows = list(csv.DictReader(f))
    other = [{**r, "upstream_dataset": r["upstream_dataset"].replace("toy", "yfcc")} for r in rows]
    import_table(engine, write_table(tmp_path / "both.csv", rows[:9] + other), "mine")
    assert {r.group for r in study.refit(engine, "mine")} == {"toy", "yfcc"}
    import_table(engine, tmp_path / "full.csv", "mine")  # the rest of toy's runs land
    toy_ids = [r["id"] for r in fetch(engine, parse_filters(["family=mine", "data=[toy-4k,toy-64k]"]))[0]]
    assert study.refit(engine, "mine", landed=[]) == []
    assert study.refit(engine, "mine", landed=["not-a-point"]) == []
    (again,) = study.refit(engine, "mine", landed=toy_ids[-1:])
    assert again.group == "toy" and again.recorded and again.fitted is not None
    assert again.fitted.law.n_runs == len(rows) == 18
    assert [r["n_runs"] for r in history.history(engine, "mine", "imagenet1k", "acc1")] == [9, 18, 18]


def test_a_law_not_fitted_yet_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scaling.tables import print_refits

    engine = connect(f"sqlite:///{tmp_path}/r.db")
    with open(law_table(tmp_path / "full.csv")) as f:
        first_run = list(csv.DictReader(f))[:1]
    import_table(engine, write_table(tmp_path / "one.csv", first_run), "mine")
    (waiting,) = study.refit(engine, "mine")
    assert waiting.fitted is None and not waiting.recorded
    assert waiting.reason == "1 run(s): a law needs at least two"  # the law's name is on the line already
    print_refits("mine", [waiting])
    assert capsys.readouterr().out == f"  no law yet for mine [toy] imagenet1k/acc1: {waiting.reason}\n"
    assert history.history(engine, "mine") == []


def test_fit_command_records_history_and_shows_it(tmp_path: Path) -> None:
    assert cli(["import", str(law_table(tmp_path / "t.csv")), "--family", "mine"], tmp_path).returncode == 0
    for _ in range(2):
        out = cli(["fit", "family=mine", "dataset=imagenet1k", "metric=acc1"], tmp_path)
        assert out.returncode == 0, out.stderr
        assert "E = " in out.stdout and "imagenet1k/acc1" in out.stdout
    out = cli(["fit", "family=mine", "--history", "--format", "json"], tmp_path)
    history = json.loads(out.stdout)
    assert len(history) == 1 and history[0]["n_runs"] == 18 and history[0]["trigger"] == "fit"


def test_synthetic_grid_law_is_recovered(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path}/r.db")
    import_table(engine, law_table(tmp_path / "t.csv", sigma=0.005), "mine")
    fitted = laws.fit(engine, ["family=mine"], "imagenet1k", "acc1")
    assert fitted.law.alpha == pytest.approx(-0.2, abs=0.02) and fitted.law.r2 > 0.97
    # The binned frontier takes the better data set's runs.
    assert {p.run.split("_")[1] for p in fitted.law.frontier} == {"toy-64k"}


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one family per kind of bad input (imported once for all the cases)."""
    root = tmp_path_factory.mktemp("bad")
    engine = connect(f"sqlite:///{root}/results.db")
    for name, path in _bad_tables(root).items():
        import_table(engine, path, name)
    engine.dispose()
    return root


def _bad_tables(tmp_path: Path) -> dict[str, Path]:
    # Two runs each: (samples seen, acc1). Arch names differ: an imported run's id is its content.
    tables = {"flat": [(1e6, 0.1), (1e6, 0.2)], "perfect": [(1e6, 0.5), (1e7, 1.0)],
              "worse": [(1e6, 0.5), (1e7, 0.4)], "negative": [(1e6, -0.5), (1e7, 0.4)]}  # fmt: skip
    out = {}
    for name, rows in tables.items():
        records = [{"arch": name, "gmacs": 2.0, "upstream_dataset": "d", "samples_seen": s, "acc1": v,
                    "name": str(i)} for i, (s, v) in enumerate(rows)]  # fmt: skip
        out[name] = write_table(tmp_path / f"{name}.csv", records)
    return out


@pytest.mark.parametrize(
    ("family", "extra", "message"),
    [
        ("flat", [], "same compute"),
        ("perfect", [], "outside (0, 1]"),
        ("negative", [], "outside (0, 1]"),
        ("worse", ["frontier=pareto"], "frontier has 1 point"),
        ("worse", ["metric=acc99"], "no run of family worse has imagenet1k/acc99"),
        ("worse", ["family=nope"], "name one family"),
        ("worse", ["frontier=convex"], "unknown frontier"),
        ("worse", ["boot=many"], "boot='many' is not a number"),
        ("worse", ["noise=loud"], "noise='loud' is not a number"),
        ("worse", ["noise=-0.01"], "noise=-0.01: the seed noise is a standard deviation of log10 error"),
        ("worse", ["group=colour"], "group='colour': use source, data, model_type, all"),
        ("worse", ["seed=-1"], "seed must be a whole number in [0, 2^32), got -1"),
        ("worse", ["level=2"], "level in (0, 1)"),
    ],
)
@pytest.mark.parametrize("command", ["fit", "report"])
def test_bad_input_is_one_line_and_writes_no_plot(
    bad_store: Path, tmp_path: Path, family: str, extra: list[str], message: str, command: str
) -> None:
    args = [f"family={family}", "dataset=imagenet1k", "metric=acc1", *extra]
    if command == "report":
        args = [a for a in args if not a.startswith(("dataset=", "metric="))]
        args += [
            f"out={tmp_path / 'report'}",
            f"metrics=[imagenet1k/{'acc99' if 'metric=acc99' in extra else 'acc1'}]",
        ]
    out = cli([command, *args], bad_store)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["report", "family=worse", "out=/proc/clipscale-report"],  # a folder that cannot be made
        ["runs", "family=worse", "--format", "csv", "--output", "/proc/clipscale-runs.csv"],
    ],
)
def test_an_output_that_cannot_be_written_is_one_line(bad_store: Path, args: list[str]) -> None:
    out = cli(args, bad_store)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: /proc/clipscale-") and "No such file or directory" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_reading_commands_create_no_store(tmp_path: Path) -> None:
    # A failed command creates no file: asking an empty folder for runs or a law is one line.
    for args in (["runs", "family=x"], ["fit", "family=x", "boot=-5"], ["report", "family=x", "out=r"],
                 ["predict", "family=x", "compute=1e9"]):  # fmt: skip
        out = cli(args, tmp_path)
        assert out.returncode == 2 and "no results store at" in out.stderr, (args, out.stderr)
    assert list(tmp_path.iterdir()) == []


def test_runs_of_equal_error_give_a_flat_law_that_is_recorded(tmp_path: Path) -> None:
    # Two runs still at chance: the first landings of a sweep. The law is flat, not an error.
    law = fit_law([1e10, 1e11], [0.98, 0.98])
    assert law.alpha == 0 and law.r2 == 1.0 and law.beta == pytest.approx(0.98)
    engine = connect(f"sqlite:///{tmp_path}/r.db")
    rows = [
        {"arch": "a", "gmacs": 2.0, "upstream_dataset": "d", "samples_seen": s, "acc1": 0.02}
        for s in (1e6, 1e7)
    ]
    import_table(engine, write_table(tmp_path / "flat.csv", rows), "chance")
    (refit,) = study.refit(engine, "chance")
    assert refit.recorded and history.history(engine, "chance")[0]["r2"] == 1.0


def test_non_positive_compute_is_refused() -> None:
    with pytest.raises(ClipscaleError, match="run b: compute must be positive"):
        fit_law([1e10, 0.0, 1e12], [0.5, 0.4, 0.3], ["a", "b", "c"])
    with pytest.raises(ClipscaleError, match="compute must be positive"):
        fit_law([1e10, 1e11, 1e12], [0.5, 0.4, 0.3]).predict(-5)


def test_predict_compute_and_model_targets(tmp_path: Path) -> None:
    assert cli(["import", str(law_table(tmp_path / "t.csv")), "--family", "mine"], tmp_path).returncode == 0
    base = ["predict", "family=mine", "metric=imagenet1k/acc1", "--format", "json"]
    by_compute = json.loads(cli([*base, "compute=3.2e10"], tmp_path).stdout)
    by_model = json.loads(cli([*base, "model=m-l", "samples_seen=1B"], tmp_path).stdout)
    assert by_model["gmacs_per_sample"] == 32.0 and by_model["compute"] == pytest.approx(3.2e10)
    assert by_model["predicted"] == pytest.approx(by_compute["predicted"])
    both = json.loads(cli([*base, "model=m-l", "samples_seen=[1B,10B]"], tmp_path).stdout)
    assert len(both) == 2 and both[1]["predicted"] > both[0]["predicted"]
    bad = cli([*base, "model=m-l"], tmp_path)
    assert bad.returncode == 2 and "samples_seen" in bad.stderr
    no_boot = json.loads(cli([*base, "compute=3.2e10", "boot=0"], tmp_path).stdout)
    assert no_boot["predicted"] == pytest.approx(by_compute["predicted"]) and no_boot["predicted_ci"] == [
        None,
        None,
    ]
    bad = cli([*base, "compute=-5"], tmp_path)
    assert bad.returncode == 2 and bad.stderr == "error: compute must be positive, got -5\n"


def test_fitting_imports_no_torch(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path}/r.db")
    import_table(engine, law_table(tmp_path / "t.csv"), "mine")
    code = (
        "import sys; from scaling.store import connect; from scaling.fit import laws; import scaling.report;"
        f"import scaling.cli; laws.fit(connect('sqlite:///{tmp_path}/r.db'), ['family=mine'], 'imagenet1k',"
        "'acc1'); assert not {'torch', 'submitit'} & set(sys.modules), sorted(sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
