"""The one shape every benchmark's figures take, so ``bench/table.py`` can put them all in
one table: what was measured, its value and unit, the target, and, where a peer does the
same job, the peer's figure from the same run (never from another run or machine).

Each benchmark writes its JSON with a ``figures`` list of :func:`figure` rows and a
``machine`` from :func:`machine`.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def machine() -> dict[str, Any]:
    """What ran the benchmark: its figures hold for this machine only."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "system": platform.platform(terse=True)}  # fmt: skip


def figure(
    name: str,
    value: float | None,
    unit: str,
    target: str | None = None,
    met: bool | None = None,
    peer: str | None = None,
    peer_value: float | None = None,
    before: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One row of the table. ``target`` is how the figure is judged ("< 1 s"), ``met`` whether
    it was; ``peer`` names the other tool measured beside it in the same run and ``peer_value``
    is its figure in the same unit; ``before`` is the figure before a fix, where one was made."""
    ratio = round(value / peer_value, 3) if value is not None and peer_value else None
    return {"figure": name, "value": value, "unit": unit, "target": target, "met": met, "peer": peer,
            "peer_value": peer_value, "ratio_to_peer": ratio, "before": before, "note": note}  # fmt: skip
