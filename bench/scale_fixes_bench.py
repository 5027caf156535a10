"""Three scale fixes, each timed on today's code and on the commit before the fix, in the same
run on the same machine:

1. An include's de-duplication (e6bf2b3: a set; before, a scan of every kept point per
   include point): ``grid._coordinates`` of a 10,200-point grid whose include lists 5,000
   points, 4,000 of them the grid's own.
2. A reader beside a writer on SQLite (430be0b: reads take a deferred snapshot transaction;
   before, BEGIN IMMEDIATE, queued behind the writer): ``query.fetch`` of 1,000 points while
   another process holds a write transaction open for --hold seconds.
3. One executemany instead of one UPDATE per row: the task ids and the reconciled states of
   10,000 attempts (``set_submission``, ``update_attempts``; b958dba) and ``state.refresh`` of
   10,000 points whose attempts ended (c5dcda2).

Each "before" is a detached worktree of <fix>^ under /tmp/exp (removed at the end). Every
figure is timed in a subprocess with PYTHONPATH on its tree (today's: this checkout), the
trees taking turns; best of --repeats. Setup (stores, points, submissions) is not timed.
Writes bench/results/scale_fixes.json.

    .venv/bin/python bench/scale_fixes_bench.py [--repeats 3] [--hold 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from figures import figure, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "results" / "scale_fixes.json"
FIXES = {"grid": "e6bf2b3", "reader": "430be0b", "attempts": "b958dba", "refresh": "c5dcda2"}
FAMILY = "bench"
N_WRITES = 10_000
# Holds a write transaction on the store, says so, then keeps it for argv[2] seconds.
WRITER = """import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE points SET status = 'failed'")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


# ---------------------------------------------------------------- measured in a tree's subprocess


def grid_expansion(_: float) -> dict[str, Any]:
    from scaling import grid

    models, data = [f"ViT-{m}" for m in ("B-32", "B-16", "L-14", "H-14", "g-14")], ["80M", "400M", "2B"]
    samples, rates = [10**9 * (i + 1) for i in range(20)], [1e-4 * (1 + i / 4) for i in range(34)]
    axes = (("model", tuple(models)), ("data", tuple(data)), ("samples_seen", tuple(samples)),
            ("lr", tuple(rates)))  # fmt: skip
    # 4,000 of the grid's own points and 1,000 new ones (an lr off the axis), in one order for both trees
    own = [{"model": (models[i % 5],), "data": (data[i % 3],), "samples_seen": (samples[i % 20],),
            "lr": (rates[(7 * i) % 34],)} for i in range(4000)]  # fmt: skip
    new = [{"model": (models[i % 5],), "data": (data[i % 3],), "samples_seen": (samples[i % 20],),
            "lr": (2e-3 + 1e-6 * (i % 250),)} for i in range(1000)]  # fmt: skip
    include = tuple(own + new)
    spec = SimpleNamespace(name=FAMILY, axes=axes, exclude=(), include=include, train=None)
    start = time.perf_counter()
    points = grid._coordinates(spec)  # type: ignore[arg-type]  # only the fields both trees read
    return {"s": time.perf_counter() - start, "grid": 10_200, "include": len(include), "points": len(points)}


def _rows(n: int) -> list[Any]:
    from scaling.store import PointRow

    ids = [f"p{i:07d}" for i in range(n)]
    return [
        PointRow(p, "toy-m", "toy-4k", 1000 * (i + 1), 1.0, "planned", "run", {"id": p})
        for i, p in enumerate(ids)
    ]


def reader_beside_writer(hold: float) -> dict[str, Any]:
    from scaling.store import connect, record_points
    from scaling.store.query import fetch

    with tempfile.TemporaryDirectory() as tmp:
        engine = connect(f"sqlite:///{tmp}/results.db")
        record_points(engine, FAMILY, _rows(1000))
        fetch(engine)  # the schema checked and the pool's connection open before the clock starts
        writer = subprocess.Popen([sys.executable, "-c", WRITER, f"{tmp}/results.db", str(hold)],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert writer.stdout is not None and writer.stdout.readline().strip() == "holding"
        start = time.perf_counter()
        rows, _ = fetch(engine)
        s = time.perf_counter() - start
        writer.wait()
        engine.dispose()
    return {"s": s, "rows": len(rows), "saw": sorted({r["status"] for r in rows}), "hold_s": hold}


def store_writes(_: float) -> dict[str, Any]:
    import sqlalchemy as sa

    from scaling.clock import db_now
    from scaling.store import connect, record_points, state
    from scaling.store.attempts import NewSubmission, add_submissions, locked, set_submission, update_attempts
    from scaling.store.db import transaction

    def timed(work: Any) -> float:
        start = time.perf_counter()
        work()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        engine = connect(f"sqlite:///{tmp}/results.db")
        record_points(engine, FAMILY, _rows(N_WRITES))
        ids = [f"p{i:07d}" for i in range(N_WRITES)]
        batch = NewSubmission("array", "slurm", tuple(ids), "/jobs/array", {})
        locked(engine, FAMILY, lambda conn: add_submissions(conn, FAMILY, [batch], "bench"))
        out = {"task_ids_s": timed(lambda: set_submission(engine, "array", "submitted", "1000",
                                                          lambda i: f"1000_{i}"))}  # fmt: skip
        changes = [{"point_id": pid, "key": f"array:{i}", "state": "running", "node": "node001",
                    "started_at": db_now()} for i, pid in enumerate(ids)]  # fmt: skip
        out["states_s"] = timed(lambda: update_attempts(engine, changes))
        with engine.begin() as conn:  # the attempts end behind refresh's back: every point's status to write
            conn.execute(sa.text("UPDATE attempts SET state = 'succeeded'"))
        out["refresh_s"] = timed(lambda: transaction(engine, lambda conn: state.refresh(conn, ids, db_now())))
        with engine.connect() as conn:
            done = conn.execute(sa.text("SELECT count(*) FROM points WHERE status = 'succeeded'")).scalar()
        engine.dispose()
    return {**out, "attempts": N_WRITES, "points_succeeded": done}


MEASURES = {"grid": grid_expansion, "reader": reader_beside_writer, "writes": store_writes}


# ---------------------------------------------------------------- the trees and the turns

# What each turn measures and the fix whose parent is its "before"; "refresh" shares the "now"
# of "writes" (one measurement of today's tree times both).
TURNS = {"grid": ("grid", "grid"), "reader": ("reader", "reader"), "writes": ("writes", "attempts"),
         "refresh": ("writes", "refresh")}  # fmt: skip


def git(*args: str, check: bool = True) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=check)
    return done.stdout.strip()


def before_tree(fix: str) -> Path:
    """A detached worktree of the commit before ``fix``; /work/main's own checkout is untouched."""
    path = Path(f"/tmp/exp/bench-before-{fix}")
    if path.exists():
        git("worktree", "remove", "--force", str(path))
    git("worktree", "add", "-q", "--detach", str(path), f"{fix}^")
    return path


def measured(what: str, tree: Path, hold: float) -> dict[str, Any]:
    """One measurement of ``what``, ``scaling`` imported from ``tree``; an error is kept, not raised."""
    command = [sys.executable, __file__, "--measure", what, "--hold", str(hold)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    out = dict(json.loads(done.stdout.splitlines()[-1]))
    if out["tree"] != str(tree):
        raise AssertionError(f"scaling was imported from {out['tree']}, not {tree}")
    return out


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each time's best over the repeats (the rest as the first run has them), or the error."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    times = {k: round(min(r[k] for r in ok), 4) for k in ok[0] if k == "s" or k.endswith("_s")}
    return {**ok[0], **times, "repeats": len(ok)}


def row(name: str, now: dict[str, Any], was: dict[str, Any], key: str, unit: str, fix: str, note: str,
        **judged: Any) -> dict[str, Any]:  # fmt: skip
    scale = 1000 if unit == "ms" else 1

    def value(r: dict[str, Any]) -> float | None:
        return round(r[key] * scale, 4) if key in r else None

    failed = f"; before could not run: {was['error']}" if "error" in was else ""
    where = f"before: {fix}^ ({git('rev-parse', '--short', fix + '^')}), the same code in a worktree of it"
    note = f"{where}, same run; best of {now.get('repeats')}; {note}{failed}"
    return figure(name, value(now), unit, before=value(was), note=note, **judged)


def figures_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows (bench/table.py)."""
    g, rd, w, rf = r["grid"], r["reader"], r["writes"], r["refresh"]
    gn, rn, wn, wb, fb = g["now"], rd["now"], w["now"], w["before"], rf["before"]
    refresh = (f"both include state.refresh of the 10,000 points, one UPDATE per point until c5dcda2 "
               f"({wb.get('refresh_s')} s alone at b958dba^); at c5dcda2^ (this fix, not that)")  # fmt: skip
    return [
        row(f"expand a {gn['grid']:,}-point grid with {gn['include']:,} include entries", gn, g["before"],
            "s", "s", FIXES["grid"], "grid._coordinates; 4,000 entries are grid points (1,020 distinct), "
            f"1,000 new; points: {gn['points']} now, {g['before'].get('points')} before; before: the "
            "kept list scanned per include point"),
        row(f"query 1,000 points while a writer holds its transaction {rn['hold_s']:g} s", rn, rd["before"],
            "s", "ms", FIXES["reader"], "query.fetch while another process holds BEGIN IMMEDIATE and has "
            f"updated every point's status; statuses read: {rn['saw']} now (the snapshot before the write), "
            f"{rd['before'].get('saw')} before (read after the writer's commit)", target="< 100 ms",
            met=rn["s"] < 0.1),
        row(f"task ids of a {N_WRITES:,}-task array (set_submission)", wn, wb, "task_ids_s", "s",
            FIXES["attempts"], f"one executemany (before: one UPDATE per attempt); {refresh}: "
            f"{fb.get('task_ids_s')} s"),
        row(f"reconciled states of {N_WRITES:,} attempts (update_attempts)", wn, wb, "states_s", "s",
            FIXES["attempts"], "one executemany per set of changed columns (before: one UPDATE per attempt); "
            f"{refresh}: {fb.get('states_s')} s"),
        row(f"state.refresh of {N_WRITES:,} points whose attempts ended", wn, fb, "refresh_s", "s",
            FIXES["refresh"], "one executemany (before: one UPDATE per point); points succeeded after it: "
            f"{wn['points_succeeded']} now, {fb.get('points_succeeded')} before"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds the writer holds its transaction")
    parser.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)  # a tree's subprocess
    args = parser.parse_args()
    if args.measure:
        import scaling  # from PYTHONPATH: the tree measured

        tree = str(Path(scaling.__file__).parents[1])
        print(json.dumps({**MEASURES[args.measure](args.hold), "tree": tree}))
        return
    load = [round(x, 2) for x in os.getloadavg()]  # other work on a shared machine slows every figure
    trees = {fix: before_tree(sha) for fix, sha in FIXES.items()}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {label: {"now": [], "before": []} for label in TURNS}
    try:
        for _ in range(args.repeats):  # the trees take turns, so that both see the same machine
            for label, (what, fix) in TURNS.items():
                if label != "refresh":
                    runs[label]["now"].append(measured(what, REPO, args.hold))
                runs[label]["before"].append(measured(what, trees[fix], args.hold))
                print(label, {side: rs[-1] for side, rs in runs[label].items() if rs}, flush=True)
    finally:
        for path in trees.values():
            git("worktree", "remove", "--force", str(path), check=False)
    result: dict[str, Any] = {label: {side: best(rs) for side, rs in turns.items() if rs}
                              for label, turns in runs.items()}  # fmt: skip
    result["commits"] = {fix: {"fix": sha, "before": git("rev-parse", "--short", sha + "^")}
                         for fix, sha in FIXES.items()}  # fmt: skip
    load += [round(x, 2) for x in os.getloadavg()]
    result |= {"machine": machine(), "load_average_1_5_15min_start_end": load, "repeats": args.repeats}
    result["figures"] = figures_of(result)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["figures"], indent=2))


if __name__ == "__main__":
    main()
