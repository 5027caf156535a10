"""Bad input a new user would really type, each run as the real ``scaling`` command in a
folder holding only that case's input files: sweep files, Hydra overrides, command-line
flags, run filters, tables and outcome files to import or ingest, broken stores, and URLs.

Every case must end as the project's guide says: a non-zero exit, one line on stderr that
names the problem, no traceback, and the folder exactly as it was (no results.db, no
mlflow.db, no runs/, no report, and the input files byte for byte). Only commands that
train nothing: plan, runs, fit, report, predict, audit, import, ingest, cancel, and
status/launch refused before anything is submitted.

The cases run in a small thread pool once per session (each command is a process that
spends most of its ~0.5 s starting up); each case is still its own test, with its own id.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import reliability_count

# What the user's shell may set and would change what a command does here.
_ENV_OUT = ("CLIPSCALE_DB", "CLIPSCALE_CONFIG_PATH", "CLIPSCALE_DATA_ROOT", "MLFLOW_TRACKING_URI")


def _command() -> list[str]:
    """The installed ``scaling`` script beside this Python; the module where it is missing."""
    script = shutil.which("scaling", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "scaling.cli"]


@dataclass(frozen=True)
class Template:
    """A file made once per session (a store, a foreign database) copied into a case."""

    name: str


STORE, FOREIGN, NEWER = Template("store"), Template("foreign"), Template("newer")


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    names: str  # what the one line must say
    files: Mapping[str, str | bytes | Template] = field(default_factory=dict)
    absent: str | None = None  # what it must not say (a password)
    bug: str | None = None  # a known product bug outside this suite's files: a strict xfail


def case(id: str, args: str | tuple[str, ...], names: str, files: Mapping[str, Any] | None = None,
         **kw: Any) -> Case:  # fmt: skip
    return Case(id, tuple(shlex.split(args)) if isinstance(args, str) else args, names, files or {}, **kw)


# A one-point CPU sweep; "{point}" in a path or text is its point id, found by planning it.
SWEEP = """\
defaults:
  - gpu: cpu
  - cluster: local
  - _self_
name: mini
runs_root: runs
model: [toy-s]
data: [toy-4k]
samples_seen: [4k]
train: {lr: 1.0e-3, warmup: 5, batch_size: 32, gpus: 1, workers: 1, precision: fp32, seed: 0}
"""


def sweep(old: str = "", new: str = "", extra: str = "") -> dict[str, str]:
    """The sweep as s.yaml, with ``old`` replaced by ``new`` and ``extra`` lines added."""
    assert not old or old in SWEEP, old
    return {"s.yaml": (SWEEP.replace(old, new) if old else SWEEP) + extra}


HEADER = "name,arch,samples_seen,gmacs,upstream_dataset,downstream_dataset,acc1"
ROW = "run,m-s,1000000.0,2.0,toy-4k,imagenet1k,0.47"


def table(*rows: str) -> dict[str, str]:
    return {"t.csv": "\n".join((HEADER, *rows)) + "\n"}


OUTCOME = {"id": "{point}", "status": "succeeded", "samples_seen": 4000, "samples_seen_planned": 4000,
           "epochs": 1, "wall_time_s": 1.0, "train_time_s": 1.0, "samples_per_s": 100.0,
           "metrics": {"toy_shapes": {"acc1": 0.5}}}  # fmt: skip
POINT = json.dumps({"id": "{point}", "sweep": "mini", "model": "toy-s", "data": "toy-4k"})


def run_dir(outcome: str | None = None, point: str | None = POINT, **changes: Any) -> dict[str, str]:
    """The sweep and its point's run folder: outcome.json (OUTCOME with ``changes``, or the
    text ``outcome``) and point.json."""
    files = {**sweep(), "runs/{point}/outcome.json": outcome or json.dumps({**OUTCOME, **changes})}
    if point is not None:
        files["runs/{point}/point.json"] = point
    return files


BENCHMARK = {"dataset": "cifar10", "model": "ViT-B-32", "pretrained": "laion2b",
             "task": "zeroshot_classification"}  # fmt: skip
PG = "postgresql+psycopg://clip:hunter2-secret@127.0.0.1:9/results"

CORPUS = [
    # ------------------------------------------------------------ sweep files
    case("sweep/unknown-key", "plan sweep=s.yaml", "unknown key 'modle'", sweep(extra="modle: [toy-m]\n")),
    case("sweep/lr-a-word", "plan sweep=s.yaml", "lr must be a number, got 'fast'",
         sweep("lr: 1.0e-3", "lr: fast")),
    case("sweep/negative-seed", "plan sweep=s.yaml", "seed must be at least 0", sweep("seed: 0", "seed: -1")),
    case("sweep/unknown-model", "plan sweep=s.yaml", "unknown model 'toy-xxl'",
         sweep("[toy-s]", "[toy-xxl]")),
    case("sweep/empty-file", "plan sweep=s.yaml", "axis model needs at least one value", {"s.yaml": ""}),
    case("sweep/a-list", "plan sweep=s.yaml", "must be a DictConfig", {"s.yaml": "- toy-s\n- toy-m\n"}),
    case("sweep/colon-in-value", "plan sweep=s.yaml", "mapping values are not allowed here (line 5",
         sweep("name: mini", "name: mini: v2")),
    case("sweep/tab-indent", "plan sweep=s.yaml", "found character '\\t'",
         sweep("name: mini", "\tname: mini")),
    case("sweep/duplicate-key", "plan sweep=s.yaml", "found duplicate key model",
         sweep(extra="model: [toy-m]\n")),
    case("sweep/latin-1", "plan sweep=s.yaml", "not UTF-8 text",
         {"s.yaml": SWEEP.replace("name: mini", "description: café").encode("latin-1")}),
    case("sweep/duplicate-points", "plan sweep=s.yaml", "two grid points resolve to the same run",
         sweep("[toy-s]", "[toy-s, toy-s]")),
    case("sweep/missing-interpolation", "plan sweep=s.yaml", "Interpolation key 'nope' not found",
         sweep("name: mini", "name: ${nope}")),
    case("sweep/unknown-default", "plan sweep=s.yaml", "Could not load 'base'",
         sweep("  - _self_", "  - base\n  - _self_")),
    case("sweep/fewer-samples-than-a-batch", "plan sweep=s.yaml", "smaller than one global batch",
         sweep("[4k]", "[10]")),
    case("sweep/warmup-longer-than-run", "plan sweep=s.yaml", "warmup of 500 steps is not shorter",
         sweep("warmup: 5", "warmup: 500")),
    case("sweep/cluster-settings-not-a-mapping", "launch sweep=s.yaml", "clusters.slurm must map settings",
         sweep(extra="clusters: {slurm: 5}\n")),
    case("sweep/file-missing", "status sweep=nosuch.yaml", "sweep file nosuch.yaml does not exist"),
    case("sweep/config-dir-broken-model", "plan sweep=s.yaml --config-dir c", "malformed YAML in",
         {**sweep(), "c/models/toy-s.yaml": "open_clip_config: [1,\n"}),
    case("sweep/config-dir-negative-data-size", "plan sweep=s.yaml --config-dir c",
         "num_samples must be positive",
         {**sweep(), "c/datasets/toy-4k.yaml": "num_samples: -4\nshards: x\n"}),
    # ------------------------------------------------------------ Hydra overrides
    case("override/negative-seed", "plan sweep=s.yaml train.seed=-1", "seed must be at least 0", sweep()),
    case("override/empty-value", "plan sweep=s.yaml train.lr=", "lr must be a number, got ''", sweep()),
    case("override/deleted-axis", "plan sweep=s.yaml ~model", "axis model needs at least one value", sweep()),
    case("override/misspelt-key", "plan sweep=s.yaml train.lerning_rate=1e-3", "train.lerning_rate", sweep()),
    case("override/interpolation", ("plan", "sweep=s.yaml", "model=${oops}"), "Interpolation key 'oops'",
         sweep()),
    case("override/unclosed-quote", ("plan", "sweep=s.yaml", "model='toy-s"), "malformed override", sweep()),
    case("override/repeated-samples", "plan sweep=s.yaml samples_seen=[4k,4k]", "two grid points", sweep()),
    # ------------------------------------------------------------ flags
    case("flag/misspelt-option", "plan sweep=s.yaml --formt json", "No such option '--formt'", sweep()),
    case("flag/unknown-format", "plan sweep=s.yaml --format xml", "'xml' is not one of", sweep()),
    case("flag/misspelt-command", "plna sweep=s.yaml", "No such command 'plna'", sweep()),
    case("flag/import-without-table", "import --family mine", "Missing argument 'TABLE'"),
    case("flag/import-without-family", "import t.csv", "Missing option '--family'", table(ROW)),
    case("flag/import-empty-family", ("import", "t.csv", "--family", ""), "--family needs a name",
         table(ROW)),
    case("flag/zero-every", "status sweep=s.yaml --watch --every 0", "0.0 is not in the range", sweep()),
    case("flag/output-without-value", "runs -o", "Option '-o' requires an argument"),
    case("flag/flops-per-param-a-word", "import t.csv --family mine --flops-per-param abc",
         "'abc' is not a valid", table(ROW)),
    # ------------------------------------------------------------ filters and law settings
    case("filter/unknown-operator", "runs model~m-s", "cannot read filter 'model~m-s'",
         {"results.db": STORE}),
    case("filter/flag-not-boolean", "runs from_checkpoint=maybe", "'maybe' is not true or false",
         {"results.db": STORE}),
    case("filter/misspelt-status", "runs status=succeded", "unknown status 'succeded'",
         {"results.db": STORE}),
    case("filter/metric-a-word", "runs imagenet1k/acc1>high", "'high' is not a number",
         {"results.db": STORE}),
    case("fit/unknown-filter", "fit family=mine colour=red", "unknown filter 'colour'",
         {"results.db": STORE}),
    case("fit/unknown-form", "fit family=mine form=cubic", "form='cubic'", {"results.db": STORE}),
    case("fit/metric-without-dataset", "fit family=mine metric=acc1", "name the metric",
         {"results.db": STORE}),
    case("report/no-out", "report family=mine", "where to write: out=DIR", {"results.db": STORE}),
    case("report/metric-without-dataset", "report family=mine out=r metrics=[acc1]",
         "'acc1' is not DATASET/METRIC", {"results.db": STORE}),
    case("predict/compute-a-word", "predict family=mine metric=imagenet1k/acc1 compute=abc",
         "compute='abc' is not a number", {"results.db": STORE}),
    # ------------------------------------------------------------ tables to import
    case("import/header-only", "import t.csv --family mine", "t.csv holds no runs", table()),
    case("import/truncated", "import t.csv --family mine", "t.csv:3: 4 cells, but the header has 7",
         table(ROW, "run,m-m,1000000.0,8")),
    case("import/shifted-row", "import t.csv --family mine", "t.csv:2: 8 cells, but the header has 7",
         table(ROW.replace("run,", "run, v2,"))),
    case("import/wrong-columns", "import t.csv --family mine", "no column arch",
         {"t.csv": "model,params,loss\nm,1e6,2.3\n"}),
    case("import/infinite-samples", "import t.csv --family mine", "must be positive and finite",
         table(ROW.replace("1000000.0", "inf"))),
    case("import/nan-samples", "import t.csv --family mine", "must be positive and finite",
         table(ROW.replace("1000000.0", "nan"))),
    case("import/negative-gmacs", "import t.csv --family mine",
         "t.csv:2: samples_seen and gmacs must be positive", table(ROW.replace(",2.0,", ",-2.0,"))),
    case("import/metric-a-word", "import t.csv --family mine", "acc1 is not a number ('high')",
         table(ROW.replace("0.47", "high"))),
    case("import/utf-16", "import t.csv --family mine", "cannot read t.csv",
         {"t.csv": (HEADER + "\n" + ROW + "\n").encode("utf-16")}),
    case("import/a-folder", "import d --family mine", "cannot read d", {"d/t.csv": HEADER + "\n"}),
    case("import/missing-file", "import nope.csv --family mine --format clipa", "cannot read nope.csv"),
    case("import/mapped-column-missing",
         "import t.csv --family mine --columns model=arch,samples_seen=samples,imagenet1k/acc1=acc1",
         "no column 'samples'", table(ROW)),
    case("import/benchmark-truncated-json", "import r --family mine --format clip_benchmark", "not JSON",
         {"r/a.json": json.dumps(BENCHMARK)[:40]}),
    case("import/benchmark-nan-metric", "import r --family mine --format clip_benchmark",
         "not a finite number", {"r/a.json": json.dumps({**BENCHMARK, "metrics": {"acc1": float("nan")}})}),
    case("import/clipa-wrong-table", "import t.csv --family mine --format clipa", "no column 'version'",
         table(ROW)),
    # ------------------------------------------------------------ outcome files to ingest
    case("ingest/truncated-outcome", "ingest sweep=s.yaml", "is not a readable outcome",
         run_dir(json.dumps(OUTCOME)[:60])),
    case("ingest/unknown-status", "ingest sweep=s.yaml", "unknown status 'done'", run_dir(status="done")),
    case("ingest/samples-a-word", "ingest sweep=s.yaml", "samples_seen must be a whole number",
         run_dir(samples_seen="lots")),
    case("ingest/negative-samples", "ingest sweep=s.yaml", "samples_seen must be a whole number",
         run_dir(samples_seen=-5)),
    case("ingest/missing-field", "ingest sweep=s.yaml", "missing 1 required positional argument: 'epochs'",
         run_dir(json.dumps({k: v for k, v in OUTCOME.items() if k != "epochs"}))),
    case("ingest/no-point-file", "ingest sweep=s.yaml", "point.json is not readable", run_dir(point=None)),
    # ------------------------------------------------------------ stores
    case("store/corrupt", "fit family=mine", "not a usable clipscale database",
         {"results.db": b"\0garbage" * 512}),
    case("store/foreign-sqlite", "fit family=mine", "holds tables that are not clipscale's (users)",
         {"results.db": FOREIGN}),
    case("store/newer-schema-read", "runs", "made by a newer clipscale", {"results.db": NEWER}),
    case("store/newer-schema-write", "import t.csv --family mine", "made by a newer clipscale",
         {"results.db": NEWER, **table(ROW)}),
    case("store/missing-for-audit", "audit family=mine metric=imagenet1k/acc1 cut=1e9",
         "no results store at"),
    case("store/missing-for-cancel", "cancel sweep=s.yaml", "no results store at", sweep()),
    case("store/unwritable-folder", "import t.csv --family mine --db sqlite:////proc/clipscale.db",
         "unable to open database file", table(ROW)),
    # ------------------------------------------------------------ URLs
    case("url/no-scheme", "import t.csv --family mine --db results.db", "not a database URL", table(ROW)),
    case("url/sqlite-two-slashes", "import t.csv --family mine --db sqlite://results.db",
         "Invalid SQLite URL", table(ROW)),
    case("url/sqlite-missing-folder", "launch sweep=s.yaml --db sqlite:///nodir/r.db", "nodir does not exist",
         sweep()),
    case("url/unknown-dialect", "import t.csv --family mine --db foo://bar", "sqlalchemy.dialects:foo",
         table(ROW)),
    case("url/postgres-closed-port", f"import t.csv --family mine --db {PG}", "port 9 failed", table(ROW),
         absent="hunter2"),
    case("url/tracking-unknown-scheme", "status sweep=s.yaml --tracking-uri htp:/mlflow", "unsupported URI",
         {**sweep(), "results.db": STORE}),
    case("url/tracking-not-a-database", "status sweep=s.yaml --tracking-uri sqlite:///m.db",
         "cannot be used: file is not a database",
         {**sweep(), "results.db": STORE, "m.db": b"\0garbage" * 512}),
    case("url/tracking-missing-folder", "status sweep=s.yaml --tracking-uri sqlite:///nodir/mlflow.db",
         "nodir does not exist", sweep()),
    # ------------------------------------------------------------ launch, refused before submitting
    case("launch/no-data", "launch sweep=s.yaml", "toy/toy-4k/00000.tar not found", sweep()),
]  # fmt: skip


# ---------------------------------------------------------------- running the cases


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    left: list[str]  # paths added, changed or removed


def _law_table() -> str:
    """3 models x 2 data sets x 3 sizes whose error follows E = 8·C^-0.2 (data set 1 worse)."""
    rows = [HEADER]
    for arch, gmacs in (("m-s", 2.0), ("m-m", 8.0), ("m-l", 32.0)):
        for data, penalty in (("toy-4k", 1.2), ("toy-64k", 1.0)):
            for samples in (1e6, 1e7, 1e8):
                acc = 1 - penalty * 8.0 * (gmacs * samples) ** -0.2
                rows.append(f"run,{arch},{samples},{gmacs},{data},imagenet1k,{acc:.6f}")
    return "\n".join(rows) + "\n"


def _scaling(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_OUT}
    return subprocess.run([*_command(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _templates(root: Path) -> tuple[dict[str, Path], str]:
    """The stores the cases copy (a real one made by `scaling import`, a foreign SQLite
    database, a store of a newer schema), and the mini sweep's point id."""
    (root / "law.csv").write_text(_law_table())
    (root / "s.yaml").write_text(SWEEP)
    with ThreadPoolExecutor(2) as pool:  # planning counts the model's MACs once (torch): seconds
        imported = pool.submit(_scaling, ["import", "law.csv", "--family", "mine"], root)
        planned = pool.submit(_scaling, ["plan", "sweep=s.yaml", "--format", "json"], root)
    assert imported.result().returncode == 0, imported.result().stderr
    assert planned.result().returncode == 0, planned.result().stderr
    assert not (root / "results.db-wal").exists()  # the store is whole in one file
    foreign, newer = root / "foreign.db", root / "newer.db"
    with closing(sqlite3.connect(foreign)) as db, db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('ann')")
    shutil.copy(root / "results.db", newer)
    # Closed, not only committed: the store is in WAL mode, and the change must be in the
    # file the cases copy (an open connection keeps it in newer.db-wal).
    with closing(sqlite3.connect(newer)) as db, db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    assert not (root / "newer.db-wal").exists()
    paths = {"store": root / "results.db", "foreign": foreign, "newer": newer}
    return paths, json.loads(planned.result().stdout)[0]["id"]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def _run(c: Case, folder: Path, templates: dict[str, Path], point: str) -> Result:
    folder.mkdir(parents=True)
    for name, content in c.files.items():
        path = folder / name.replace("{point}", point)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Template):
            shutil.copy(templates[content.name], path)
        else:
            text = content.replace("{point}", point).encode() if isinstance(content, str) else content
            path.write_bytes(text)
    before = _snapshot(folder)
    try:
        out = _scaling(list(c.args), folder, timeout=60)
        code, stdout, stderr = out.returncode, out.stdout, out.stderr
    except subprocess.TimeoutExpired:
        code, stdout, stderr = -1, "", "timed out after 60 s"
    after = _snapshot(folder)
    # A path on one side only reads as its own name on the other, which no content equals.
    left = [p for p in sorted(before.keys() | after.keys()) if before.get(p, p) != after.get(p, p)]
    return Result(code, stdout, stderr, left)


@pytest.fixture(scope="session")
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every selected case, run once, a few at a time."""
    chosen = {item.callspec.params["c"].id for item in request.session.items
              if hasattr(item, "callspec") and isinstance(item.callspec.params.get("c"), Case)}  # fmt: skip
    templates, point = _templates(tmp_path_factory.mktemp("templates"))
    root = tmp_path_factory.mktemp("bad-inputs")
    cases = [c for c in CORPUS if c.id in chosen]
    with ThreadPoolExecutor(4) as pool:  # the commands mostly start up: a few at a time even on 2 cores
        done = pool.map(lambda ic: _run(ic[1], root / str(ic[0]), templates, point), enumerate(cases))
        return dict(zip([c.id for c in cases], done, strict=True))


def test_the_corpus_is_wide() -> None:
    assert len(CORPUS) >= 45 and len({c.id for c in CORPUS}) == len(CORPUS)
    kinds = {c.id.split("/")[0] for c in CORPUS}
    assert kinds >= {"sweep", "override", "flag", "filter", "fit", "report", "import", "ingest", "store",
                     "url", "launch"}  # fmt: skip


@pytest.mark.parametrize(
    "c",
    [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else [])
     for c in CORPUS],
)  # fmt: skip
def test_bad_input_is_one_line_and_leaves_nothing(c: Case, results: dict[str, Result]) -> None:
    r = results[c.id]
    reliability_count("bad inputs tried", 1)
    reliability_count("files left behind by failed commands", len(r.left))
    said = f"{' '.join(c.args)}\nexit {r.returncode}\nstdout: {r.stdout[-800:]}\nstderr: {r.stderr[-1500:]}"
    assert r.returncode > 0, said  # an error, not a crash by a signal
    assert "Traceback" not in r.stdout + r.stderr, said
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), said
    assert c.names in lines[0], said
    assert c.absent is None or c.absent not in r.stdout + r.stderr, said
    assert not r.left, f"left behind or changed: {r.left}\n{said}"
