"""open_clip's published results table imported as runs (`scaling import … --format openclip`)
and fitted per pretraining data source; the shared copy of the table is the data, and the
shared tag-parse table (made by hand from the tags and the documents they cite) the oracle."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import REPO
from test_fit import cli

from scaling.fit.selection import source_of
from scaling.store.openclip import parse_tag

DOCS = REPO.parent / "shared" / "external-data" / "open_clip-docs"
RESULTS = DOCS / "openclip_results.csv"
# The oracle's data-source names, as sources (source_of) of ours.
SOURCES = {
    "DFN-5B": "DFN", "DFN-2B": "DFN", "LAION-2B": "LAION", "LAION-400M": "LAION", "LAION-5B": "LAION",
    "WebLI": "WebLI", "DataComp": "DataComp", "MetaCLIP-2.5B": "MetaCLIP", "MetaCLIP-400M": "MetaCLIP",
    "Merged-2B (EVA)": "Merged", "OpenAI-WIT-400M": "CLIP-WIT", "LAION-Aesthetic": "LAION-Aesthetic",
    "CC12M": "CC", "YFCC-15M": "YFCC", "NLLB-CLIP (see open_clip PRETRAINED.md)": "unknown (v1)",
}  # fmt: skip
FIT = ["fit", "family=openclip", "dataset=imagenet1k", "metric=acc1", "group=source", "--format", "json"]


@pytest.fixture(scope="module")
def docs() -> Path:
    if not RESULTS.is_file():
        pytest.skip("../shared/external-data/open_clip-docs is not present")
    return DOCS


@pytest.fixture(scope="module")
def imported(docs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("openclip")
    out = cli(
        ["import", str(docs / "openclip_results.csv"), "--format", "openclip", "--family", "openclip"], tmp
    )
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip()
        == "121 runs in family openclip (41 of unknown samples seen: left out of compute laws)"
    )
    return tmp


def points(tmp: Path) -> dict[str, tuple[str, int | None, float | None, str | None]]:
    with sqlite3.connect(tmp / "results.db") as db:
        rows = db.execute(
            "SELECT id, data, samples_seen, gmacs_per_sample, no_compute FROM points"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def test_every_checkpoint_has_the_oracles_source_and_samples_seen(imported: Path, docs: Path) -> None:
    got = points(imported)
    with open(docs / "openclip_results_tag_parse.csv") as f:
        oracle = list(csv.DictReader(f))
    with open(docs / "model_profile.csv") as f:
        gflops = {r["model"]: float(r["gflops"]) for r in csv.DictReader(f)}
    assert len(got) == len(oracle) == 121
    for row in oracle:
        data, samples, gmacs, why = got[f"{row['name']}_{row['pretrained']}"]
        if row["pretrain_data"] == "CommonPool":  # one source there; one per filter here
            assert data.startswith("CommonPool-"), row
        else:
            assert source_of(data) == SOURCES[row["pretrain_data"]], row
        if row["samples_seen"]:
            assert samples == round(float(row["samples_seen"])) and why is None, row
        else:
            assert samples is None and why and "not known" in why, row
        assert gmacs == pytest.approx(gflops[row["name"]] / 2)  # the profiler counts a MAC as 2 FLOPs


def test_laws_per_pretraining_source_leave_out_runs_of_unknown_compute(imported: Path) -> None:
    out = cli(FIT, imported)
    assert out.returncode == 0, out.stderr
    laws = json.loads(out.stdout)
    by = {law["source"]: law for law in laws}
    assert len(by) == len(laws) and {"LAION", "DataComp", "MetaCLIP", "CLIP-WIT"} <= set(by)
    for law in laws:
        assert {"source", "alpha", "beta", "n_runs"} <= set(law) and law["n_runs"] >= 2
    # LAION: 38 checkpoints, 12 of them tagged by epochs or (CLIPA) not at all.
    laion = by["LAION"]
    assert laion["n_runs"] == 26 and laion["n_excluded"] == 12 and laion["alpha"] < 0
    assert all("not known" in e["reason"] for e in laion["excluded"])
    # DFN and WebLI publish no samples seen: no law, and the table says why.
    assert "DFN" not in by and "WebLI" not in by
    table = cli(FIT[:-2], imported).stdout
    dfn = next(line for line in table.splitlines() if line.startswith("no law for DFN (imagenet1k/acc1)"))
    assert "has a known compute (4 left out" in dfn and "samples seen not known: the tag 'dfn" in dfn


def test_importing_the_table_again_changes_nothing(imported: Path, docs: Path) -> None:
    def state() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        with sqlite3.connect(imported / "results.db") as db:
            p = db.execute(
                "SELECT id, data, samples_seen, compute_gmacs, params FROM points ORDER BY id"
            ).fetchall()
            m = db.execute("SELECT point_id, dataset, metric, value FROM metrics ORDER BY 1, 2, 3").fetchall()
        return p, m

    before = state()
    assert len(before[1]) == 121 * 39  # 38 sets and DataComp's average
    out = cli(["import", str(docs / "openclip_results.csv"), "--format", "openclip", "--family", "openclip"],
              imported)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert state() == before
    # CLIP_benchmark's files of a published checkpoint meet its row (run model_tag).
    result = {"dataset": "wds/imagenet1k", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k",
              "task": "zeroshot_classification", "metrics": {"acc5": 0.9}, "language": "en"}  # fmt: skip
    (imported / "cb").mkdir()
    (imported / "cb" / "imagenet1k.json").write_text(json.dumps(result))
    out = cli(
        ["import", str(imported / "cb"), "--format", "clip_benchmark", "--family", "openclip"], imported
    )
    assert out.returncode == 0 and "(0 new, 1 already in the store)" in out.stdout, out.stdout + out.stderr


def _copy(docs: Path, tmp: Path, edit: tuple[int, str, str] | None) -> Path:
    """The table beside its profile under ``tmp``, with one cell of one row (by line) changed."""
    shutil.copy(docs / "model_profile.csv", tmp / "model_profile.csv")
    with open(docs / "openclip_results.csv", newline="") as f:
        rows = list(csv.reader(f))
    if edit is not None:
        line, column, value = edit
        rows[line - 1][rows[0].index(column)] = value
    with open(tmp / "openclip_results.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return tmp / "openclip_results.csv"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ((5, "ImageNet 1k", "high"), ":5: ImageNet 1k is not a number: 'high'"),
        ((7, "MNIST", "1.2"), ":7: MNIST is 1.2, outside [0, 1]"),
        ((9, "name", "ViT-Q-99"), ":9: model ViT-Q-99 is not in model_profile.csv"),
        ((11, "FLOPs (B)", "10"), ":11: FLOPs (B) 10 but model_profile.csv has"),
        (
            (13, "Average perf. on 38 datasets", "0.99"),
            ":13: Average perf. on 38 datasets is 0.99, not the mean",
        ),
        ((3, "name", "ViT-H-14-378-quickgelu"), ":3: ViT-H-14-378-quickgelu dfn5b is already on line 2"),
    ],
)
def test_a_bad_row_is_named_by_its_line_and_nothing_is_written(
    docs: Path, tmp_path: Path, edit: tuple[int, str, str], message: str
) -> None:
    table = _copy(docs, tmp_path, edit)
    out = cli(["import", str(table), "--format", "openclip", "--family", "openclip"], tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "results.db").exists()


def test_the_profile_is_read_beside_the_table_or_given(docs: Path, tmp_path: Path) -> None:
    table = _copy(docs, tmp_path, None)
    elsewhere = tmp_path / "profiles"
    elsewhere.mkdir()
    (tmp_path / "model_profile.csv").rename(elsewhere / "model_profile.csv")
    out = cli(["import", str(table), "--format", "openclip", "--family", "openclip"], tmp_path)
    assert out.returncode == 2 and "no model profile" in out.stderr and "--profile" in out.stderr
    assert not (tmp_path / "results.db").exists()
    out = cli(["import", str(table), "--format", "openclip", "--family", "openclip",
               "--profile", str(elsewhere / "model_profile.csv")], tmp_path)  # fmt: skip
    assert out.returncode == 0 and out.stdout.startswith("121 runs"), out.stderr


@pytest.mark.parametrize(
    ("tag", "data", "samples"),
    [
        ("laion2b_s34b_b79k", "LAION-2B", 34_000_000_000),
        ("laion400m_e32", "LAION-400M", None),
        ("datacomp_xl_s13b_b90k", "DataComp-1B", 12_800_000_000),
        ("datacomp_s34b_b86k", "DataComp-1B", 34_000_000_000),
        ("datacomp_m_s128m_b4k", "DataComp-medium", 128_000_000),
        ("commonpool_s_clip_s13m_b4k", "CommonPool-clip-small", 12_800_000),
        ("commonpool_l_s1b_b8k", "CommonPool-large", 1_280_000_000),
        ("commonpool_xl_laion_s13b_b90k", "CommonPool-laion-xlarge", 12_800_000_000),
        ("openai", "CLIP-WIT", 12_800_000_000),
        ("metaclip_fullcc", "MetaCLIP-2.5B", 12_800_000_000),
        ("frozen_laion5b_s13b_b90k", "LAION-5B", 13_000_000_000),
        ("datacomp1b", "DataComp-1B", None),
        ("dfn5b", "DFN-5B", None),
        ("v1", "unknown (v1)", None),
    ],
)
def test_a_tag_names_its_data_source_and_samples_seen(tag: str, data: str, samples: int | None) -> None:
    t = parse_tag(tag)
    assert (t.data, t.samples) == (data, samples)
    assert t.why and (samples is not None or "not known" in t.why)
