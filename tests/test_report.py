"""The report: plots and Markdown/HTML from laws fitted on a synthetic family in a real SQLite store."""

from __future__ import annotations

import csv
import dataclasses
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from scaling.errors import ClipscaleError
from scaling.fit.laws import Settings
from scaling.fit.study import Section, Target, study
from scaling.fit.surface import Surface
from scaling.report import write_report
from scaling.store import connect
from scaling.store.ingest import import_table
from scaling.units import format_count

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = {"ViT-S": 4.4, "ViT-M": 17.6, "ViT-L": 81.1}  # GMACs per sample
SAMPLES = (1e9, 3e9, 1e10, 3e10)
# Two data sources: LAION's 24 runs are fitted through the binned frontier, WIT's 3 through all.
DATA = {"LAION-80M": 1.15, "LAION-400M": 1.0, "WIT-400M": 0.9}
EVALS = {("imagenet1k", "acc1"): (6.0, -0.11), ("mscoco_captions", "image_retrieval_recall@5"): (2.8, -0.08)}


def write_table(path: Path, evals: dict[tuple[str, str], tuple[float, float]] = EVALS, seed: int = 1) -> None:
    """A results table of runs whose error follows E = β·C^α per metric (``evals``: its β and
    α), scaled per data set, with noise."""
    rng = np.random.default_rng(seed)
    columns = ["arch", "samples_seen", "gmacs", "upstream_dataset", "downstream_dataset", "acc1",
               "image_retrieval_recall@5", "name"]  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        for (data, scale), (model, gmacs), samples in product(DATA.items(), MODELS.items(), SAMPLES):
            if data.startswith("WIT") and samples != SAMPLES[0]:
                continue
            noise = 1 + 0.08 * rng.random()
            run = {"arch": model, "samples_seen": samples, "gmacs": gmacs, "upstream_dataset": data,
                   "name": f"{model}-{data}-{samples:.0e}"}  # fmt: skip
            for (dataset, metric), (beta, alpha) in evals.items():
                error = scale * noise * beta * (gmacs * samples) ** alpha
                writer.writerow({**run, "downstream_dataset": dataset, metric: 1 - error})


@pytest.fixture(scope="module")
def sections(tmp_path_factory: pytest.TempPathFactory) -> tuple[Section, ...]:
    """Both headline metrics of the synthetic family, two groups, two predictions each."""
    tmp = tmp_path_factory.mktemp("report")
    write_table(tmp / "results.csv")
    engine = connect(f"sqlite:///{tmp}/r.db")
    import_table(engine, tmp / "results.csv", "syn")
    targets = [Target("ViT-L 100B", model="ViT-L", samples_seen=1e11), Target("C=1e14", compute=1e14)]
    return study(engine, ["family=syn"], targets=targets, settings=Settings(n_boot=200))


def png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk follows the signature
    return width, height


def table(md: str, heading: str) -> list[str]:
    """The body rows of the table under the first ``### heading``."""
    lines = md.split(f"### {heading}\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    return lines[2:]


class Page(HTMLParser):
    """What a check of the HTML needs: tags seen and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")


@pytest.fixture(scope="module")
def written(
    sections: tuple[Section, ...], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Path]]:
    """The report of both metrics: its folder and the paths write_report returned."""
    out = tmp_path_factory.mktemp("written") / "report"
    return out, write_report(sections, out, "Synthetic laws", ["family=syn"])


def test_report_writes_plots_and_text(
    sections: tuple[Section, ...], written: tuple[Path, list[Path]]
) -> None:
    out, paths = written
    assert set(paths) == set(out.iterdir())
    stems = ["imagenet1k__acc1", "mscoco_captions__image_retrieval_recall_5"]
    expected = {f"{s}.{x}" for s in stems for x in ("png", "svg")} | {"report.md", "report.html"}
    assert {p.name for p in paths} == expected
    for section, stem in zip(sections, stems, strict=True):
        png = (out / f"{stem}.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) > 20_000
        assert png_size(png) == (1050, 750)  # 7 × 5 in at 150 dpi
        svg = ET.parse(out / f"{stem}.svg").getroot()
        text = " ".join(t for t in svg.itertext())
        for group, fitted in section.fits:
            law = fitted.law
            formula = f"{group}: E = {law.beta:.3g}·C^{law.alpha:.3f}".replace("-", "−")
            assert formula in text
        assert "ViT-L 100B: " in text and "prediction (95% CI)" in text
        # Each group's error surface draws its compute-optimal line.
        assert "compute-optimal (E(N, D))" in text
        surfaces = dict(section.surfaces)
        assert isinstance(surfaces["LAION"], Surface) and "the surface law needs 6" in surfaces["WIT"]

    md = (out / "report.md").read_text()
    assert md.startswith("# Synthetic laws\n") and "`family=syn`" in md
    for section in sections:
        assert f"## {section.dataset} / {section.metric}" in md
        for _, fitted in section.fits:
            assert f"{fitted.law.alpha:.3f}" in md
        for group, p in section.predictions:
            lo, hi = p.error_ci
            assert f"| {group} | {p.label} |" in md
            assert f"{(1 - p.error) * 100:.1f} % [{(1 - hi) * 100:.1f}, {(1 - lo) * 100:.1f}]" in md
        assert "| LAION vs WIT |" in md
        laion = dict(section.surfaces)["LAION"]
        assert isinstance(laion, Surface)
        n, d = laion.optimal(np.array([max(r.compute for r in dict(section.fits)["LAION"].runs)]))
        assert f"{float(n[0]):.3g} GMACs × {format_count(float(d[0]))}" in md
        assert "- WIT: no surface (3 run(s): the surface law needs 6)." in md
    assert "| ViT-L 100B | ViT-L | 100B | 8.11e+12 |" in md

    page = Page()
    page.feed((out / "report.html").read_text())
    assert page.tags[:3] == ["html", "head", "meta"] and "table" in page.tags
    assert page.images == [f"{s}.png" for s in stems]


def test_laws_and_runs_tables(sections: tuple[Section, ...], written: tuple[Path, list[Path]]) -> None:
    md = (written[0] / "report.md").read_text()
    laws = table(md, "Laws")
    assert laws[0].startswith("| LAION | E = ") and laws[0].endswith("| 24 | 5 | binned, 5 bins |")
    assert laws[1].startswith("| WIT | E = ") and laws[1].endswith("| 3 | 3 | all |")
    runs = table(md, "Runs")
    assert len(runs) == 27 and runs[0].startswith("| LAION | ViT-S | LAION-400M | 1B | 4.40e+09 | ")
    front = {p.run for _, f in sections[0].fits for p in f.law.frontier}
    assert sum(line.endswith("| yes |") for line in runs) == len(front)


def test_one_group_without_predictions(sections: tuple[Section, ...], tmp_path: Path) -> None:
    """A single group with no predictions, odd names: the report still holds, with no empty tables."""
    name, fitted = sections[0].fits[1]
    odd = Section("image net|v2", "acc1", ((f"{name} <b>|$x$", fitted),), (), ())
    twin = dataclasses.replace(odd, dataset="image net/v2")  # the same file name: gets a suffix
    paths = write_report([odd, twin], tmp_path, "single")

    assert {p.name for p in paths} == {"image_net_v2__acc1.png", "image_net_v2__acc1.svg",
                                       "image_net_v2__acc1-2.png", "image_net_v2__acc1-2.svg",
                                       "report.md", "report.html"}  # fmt: skip
    md = (tmp_path / "report.md").read_text()
    assert "### Predictions" not in md and "### Comparisons" not in md
    assert "| WIT &lt;b&gt;\\|$x$ |" in md  # neither a column break nor HTML
    assert "Runs: all stored runs." in md
    svg = " ".join(ET.parse(tmp_path / "image_net_v2__acc1.svg").getroot().itertext())
    assert "prediction (" not in svg and "WIT <b>|$x$: E = " in svg  # $ starts no math
    html = (tmp_path / "report.html").read_text()
    assert "<b>" not in html and "WIT &lt;b&gt;|$x$" in html


def test_failed_render_writes_nothing(
    sections: tuple[Section, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("the last report\n")
    real, svgs = Figure.savefig, list[object]()

    def savefig(self: Figure, fname: object, **kwargs: object) -> None:
        # The second section's SVG fails, after three plots rendered fine.
        if kwargs.get("format") == "svg":
            svgs.append(fname)
            if len(svgs) == 2:
                raise RuntimeError("renderer broke")
        real(self, fname, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Figure, "savefig", savefig)
    with pytest.raises(RuntimeError, match="renderer broke"):
        write_report(sections, out, "broken")
    assert [p.name for p in out.iterdir()] == ["report.md"]
    assert (out / "report.md").read_text() == "the last report\n"


def test_nothing_to_report(tmp_path: Path) -> None:
    with pytest.raises(ClipscaleError, match="nothing to report"):
        write_report([], tmp_path, "empty")
    assert list(tmp_path.iterdir()) == []


def test_report_imports_no_torch() -> None:
    code = "import sys, scaling.report; print(sorted({'torch', 'submitit'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
