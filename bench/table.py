"""One table of every benchmark's figures: bench/results.md and bench/results.json, and the
README's performance section.

Each benchmark writes bench/results/<name>.json with a ``figures`` list (bench/figures.py) and
the ``machine`` it ran on; a result written before its benchmark listed figures gets them from
the benchmark's own ``figures_of``. A peer's figure is always from the same run as ours.

    python bench/table.py
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
# The README's performance section is this table, between these two lines.
START, END = "<!-- bench table: written by bench/table.py -->", "<!-- end of bench table -->"
# The order of the table, and the benchmark that writes each result.
SOURCES = {
    "plan": "plan_bench", "dispatch": "dispatch_bench", "store": "store_bench",
    "scale_fixes": "scale_fixes_bench", "refit": "refit_bench",
    "fit": "fit_bench", "surface": "surface_bench", "startup": "startup_bench", "demo": "demo_bench",
    "cost_calibration": "cost_calibration", "gpu_train": "gpu_train", "probe": "probe_bench",
    "trajectories": "trajectories",
}  # fmt: skip


def rows_of(name: str, data: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The result's figures; None for a result older than its benchmark's figures (rerun it)."""
    if "figures" in data:
        return list(data["figures"])
    module = importlib.import_module(SOURCES[name])
    return list(module.figures_of(data)) if hasattr(module, "figures_of") else None


def machine_text(data: dict[str, Any]) -> str:
    m = data.get("machine")
    m = m if isinstance(m, dict) else {"machine": m}
    cpus = m.get("cpus") or data.get("cpus")
    arch = m.get("machine") or (m.get("platform") or "").rsplit("-with", 1)[0].split("-")[-1]
    device = data.get("device_name") or data.get("device")
    return ", ".join(str(p) for p in (f"{cpus} CPUs" if cpus else "", arch, device) if p)


def _number(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(table: list[dict[str, Any]], stale: list[str]) -> str:
    heads = ["benchmark", "figure", "value", "target", "met", "peer", "peer's value", "ratio to peer",
             "before", "machine"]  # fmt: skip
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python bench/table.py` gathers `bench/results/*.json`). A peer's "
        "figure was measured in the same run, on the same data and machine, as ours; *before* is the "
        "figure before a fix, measured on the commit before it. Notes are below the table.",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    notes = []
    for r in table:
        unit = f" {r['unit']}" if r.get("unit") else ""
        mark = f" [{len(notes) + 1}]" if r.get("note") else ""
        if r.get("note"):
            notes.append(r["note"])
        peer = (_number(r["peer_value"]) + unit) if r.get("peer_value") is not None else ""
        before = (_number(r["before"]) + unit) if r.get("before") is not None else ""
        cells = [r["benchmark"], r["figure"] + mark, _number(r["value"]) + unit, r.get("target") or "",
                 _number(r.get("met")), r.get("peer") or "", peer, _number(r.get("ratio_to_peer")), before,
                 r["machine"]]  # fmt: skip
        lines.append("| " + " | ".join(_cell(str(c)) for c in cells) + " |")
    lines += ["", "Notes:", ""] + [f"{i}. {_cell(n)}" for i, n in enumerate(notes, 1)]
    if stale:
        lines += ["", "Results to measure again (older than their benchmark's figures): "
                  + ", ".join(f"`{s}`" for s in stale) + "."]  # fmt: skip
    missing = [name for name in SOURCES if not (RESULTS / f"{name}.json").exists()]
    if missing:
        lines += ["", "Not measured in this checkout: " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    table, stale = [], []
    for name in SOURCES:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        where = machine_text(data)
        rows = rows_of(name, data)
        if rows is None:
            stale.append(name)
            continue
        table += [{"benchmark": name, **row, "machine": where} for row in rows]
    (HERE / "results.json").write_text(json.dumps(table, indent=2) + "\n")
    text = markdown(table, stale)
    (HERE / "results.md").write_text(text)
    readme = README.read_text()
    if START in readme and END in readme:
        body = text.split("\n", 2)[2]  # the table without its title: the README has its own
        head, rest = readme.split(START, 1)
        README.write_text(head + START + "\n" + body + rest[rest.index(END) :])
    unmet = [f"{r['benchmark']}: {r['figure']}" for r in table if r.get("met") is False]
    print(f"{len(table)} figures in bench/results.md; targets missed: {len(unmet)}")
    for u in unmet:
        print(f"  missed: {u}")


if __name__ == "__main__":
    main()
