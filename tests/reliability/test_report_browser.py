"""The HTML report opened in a real headless Chromium: every plot loads, no request fails, every
table has rows, and the page logs no error.

Debian's Chromium comes from launchers/chromium.sh (installed as root where it is missing);
Playwright drives it and never downloads a browser of its own. Without it the test skips,
except under CI=true, where it must run.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REPO, reliability_count
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, sync_playwright
from test_report import write_table
from threadpoolctl import threadpool_limits

from scaling.cli import main
from scaling.store import connect
from scaling.store.ingest import import_table

# This closed network has no Google services: keep Chromium from calling out (and from QUIC).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
PLOT_SUFFIXES = (".png", ".svg")
# The synthetic family of tests/test_report.py (two data sources, so per metric two laws and
# their comparison), with a third metric.
EVALS = {
    ("imagenet1k", "acc1"): (6.0, -0.11),
    ("mscoco_captions", "image_retrieval_recall@5"): (2.8, -0.08),
    ("flickr30k", "image_retrieval_recall@5"): (2.2, -0.09),
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`scaling report` of a synthetic family in a real SQLite store: no training, three metrics."""
    tmp = tmp_path_factory.mktemp("browser")
    write_table(tmp / "results.csv", EVALS, seed=2)
    engine = connect(f"sqlite:///{tmp}/r.db")
    import_table(engine, tmp / "results.csv", "syn")
    engine.dispose()
    out = tmp / "report"
    # Fewer bootstrap resamples than the default 1,000: the page, not the intervals, is under test.
    args = ["report", "family=syn", f"out={out}", "boot=100", "predict=[ViT-L@100B]",
            "--db", f"sqlite:///{tmp}/r.db"]  # fmt: skip
    # The error surfaces' L-BFGS-B runs are tiny: threaded BLAS only spins on them (a surface fit took
    # 1.6 s of CPU with 2 OpenBLAS threads, 0.5 s with 1, on this 2-core machine under load). scipy is
    # imported first: threadpool_limits reaches only the BLAS libraries already loaded.
    import scipy.optimize  # noqa: F401

    with threadpool_limits(1):
        done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    return out


def chromium_path() -> str:
    """Debian's Chromium from launchers/chromium.sh; skips where it cannot be had (fails under CI)."""
    done = subprocess.run([REPO / "launchers" / "chromium.sh"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        if os.environ.get("CI") == "true":  # CI runs as root on a fresh machine: it must install
            pytest.fail(f"launchers/chromium.sh failed under CI: {why}")
        pytest.skip(f"no Chromium: {why}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        # Chromium asks every site for /favicon.ico; a web server hosting reports would have one,
        # and its 404 (a console error) would say nothing about the report.
        if self.path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # the test reports what matters itself
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    """serve(dir) -> the URL of dir/report.html, served over http on 127.0.0.1 by a stdlib server
    on a thread (http, not file://: a server's status codes and content types are checked too)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_Handler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/report.html"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@dataclass
class Findings:
    """What the browser saw of one page: the plots it loaded and everything that went wrong."""

    plots: list[str] = field(default_factory=list)
    tables: int = 0
    problems: list[str] = field(default_factory=list)


# Every plot the page shows (<img>, <object>, <embed>, inline <svg>) or links to (the SVGs),
# with whether the browser could decode it: a linked file is loaded into an Image too.
PLOTS_JS = """async () => {
  const load = (src) => new Promise((done) => {
    const img = new Image();
    img.onload = () => done({src, ok: img.naturalWidth > 0, why: `naturalWidth ${img.naturalWidth}`});
    img.onerror = () => done({src, ok: false, why: 'did not load'});
    img.src = src;
  });
  const shown = Array.from(document.images, (i) => ({src: i.getAttribute('src'),
    ok: i.complete && i.naturalWidth > 0, why: `complete ${i.complete}, naturalWidth ${i.naturalWidth}`}));
  const embedded = Array.from(document.querySelectorAll('object[data], embed[src]'), (o) => {
    const box = o.getBoundingClientRect();
    return {src: o.getAttribute('data') || o.getAttribute('src'), ok: box.width > 0 && box.height > 0,
            why: `box ${box.width}x${box.height}`};
  });
  const inline = Array.from(document.querySelectorAll('body svg:not(svg svg)'), (s, i) => {
    const box = s.getBoundingClientRect();
    return {src: `inline svg #${i}`, ok: box.width > 0 && box.height > 0,
            why: `box ${box.width}x${box.height}`};
  });
  const links = Array.from(document.querySelectorAll('a[href]'), (a) => a.getAttribute('href'))
    .filter((h) => /\\.(png|svg)$/i.test(h));
  return [...shown, ...embedded, ...inline, ...await Promise.all(links.map(load))];
}"""

# Each table: its header cells and body rows.
TABLES_JS = """() => Array.from(document.querySelectorAll('table'), (t) => ({
  heads: t.querySelectorAll('thead th').length, rows: t.querySelectorAll('tbody tr').length,
  after: (t.previousElementSibling || {}).textContent || ''}))"""


def inspect(browser: Browser, url: str, directory: Path) -> Findings:
    """Open url and check it: plots, failed requests and HTTP errors, tables, console and page errors;
    the plots shown must be exactly the plot files in directory."""
    found = Findings()
    page = browser.new_page()
    try:
        _watch(page, found)
        page.goto(url, wait_until="load")
        for plot in page.evaluate(PLOTS_JS):
            found.plots.append(plot["src"])
            if not plot["ok"]:
                found.problems.append(f"plot {plot['src']} not loaded ({plot['why']})")
        _check_tables(page.evaluate(TABLES_JS), found)
        # Let late console messages (a failed resource logs one) arrive before closing.
        page.wait_for_load_state("networkidle")
    finally:
        page.close()
    # A page that silently drops a plot (or shows one the report did not write) fails here.
    files = {p.name for p in directory.iterdir() if p.suffix in PLOT_SUFFIXES}
    if sorted(found.plots) != sorted(files):
        lacking, unwritten = sorted(files - set(found.plots)), sorted(set(found.plots) - files)
        found.problems.append(f"{len(found.plots)} plots on the page, {len(files)} written; the page lacks "
                              f"{lacking}, shows unwritten {unwritten}")  # fmt: skip
    return found


def _watch(page: Page, found: Findings) -> None:
    problems = found.problems

    def response(r: Response) -> None:
        if r.status >= 400:
            problems.append(f"HTTP {r.status}: {r.url}")

    def console(m: ConsoleMessage) -> None:
        if m.type == "error":
            problems.append(f"console error: {m.text} ({m.location['url']})")

    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", response)
    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))


def _check_tables(tables: list[dict[str, Any]], found: Findings) -> None:
    found.tables = len(tables)
    if not tables:
        found.problems.append("the page has no table")
    for i, t in enumerate(tables):
        if t["heads"] == 0 or t["rows"] == 0:
            found.problems.append(
                f"table {i} (after {t['after'][:40]!r}): {t['heads']} headers, {t['rows']} rows"
            )


def test_report_opens_whole_in_chromium(browser: Browser, report: Path, serve: Any) -> None:
    found = inspect(browser, serve(report), report)
    assert found.problems == [], "\n".join(found.problems)
    # Three metrics, each a PNG shown and an SVG linked, and six tables: laws, predictions, comparisons,
    # the audit, the error surface and the runs.
    assert len(found.plots) == 6 and found.tables >= 3 * 6
    reliability_count("report plots loaded in Chromium", len(found.plots))
    reliability_count("report pages opened in Chromium", 1)


def test_a_missing_plot_is_caught(browser: Browser, report: Path, serve: Any, tmp_path: Path) -> None:
    """The check can fail: a report missing one PNG and one SVG is flagged for both."""
    broken = tmp_path / "report"
    shutil.copytree(report, broken)
    png, svg = sorted(broken.glob("*.png"))[0], sorted(broken.glob("*.svg"))[-1]
    png.unlink()
    svg.unlink()
    url = serve(broken)
    found = inspect(browser, url, broken)
    text = "\n".join(found.problems)
    root = url.removesuffix("report.html")
    for plot in (png, svg):
        assert f"plot {plot.name} not loaded" in text and f"HTTP 404: {root}{plot.name}" in text
    assert "console error: Failed to load resource: the server responded with a status of 404" in text
    assert (
        f"6 plots on the page, 4 written; the page lacks [], shows unwritten {[png.name, svg.name]}" in text
    )
