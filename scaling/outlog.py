"""Read open_clip_train's ``out.log``: samples seen, loss curve, throughput. No torch.

The trainer logs ``Train Epoch: E [N/S (P%)] ... Loss: v (avg)`` every few steps and
always at the last step of an epoch, where N is the samples the epoch has consumed, so
the samples really seen are the sum over epochs of the last N.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime

_LINE = re.compile(
    r"^(?P<time>\d{4}-\d{2}-\d{2},\d{2}:\d{2}:\d{2}) \| INFO \| Train Epoch: (?P<epoch>\d+) "
    r"\[\s*(?P<n>\d+)/(?P<total>\d+) .*? Loss: (?P<loss>\S+) \((?P<avg>\S+)\)\s*$"
)
_RATE = re.compile(r"Batch \(t\): [\d.]+, (?P<rate>[\d.]+)/s,")  # all ranks' samples/s over the last steps
PROGRESS = re.compile(r"Train Epoch: (?P<epoch>\d+) \[\s*(?P<n>\d+)/(?P<total>\d+)")
LOSS = re.compile(r"Train Epoch: (?P<epoch>\d+) .* Loss: (?P<loss>\S+) \((?P<avg>\S+)\)\s*$")


@dataclass
class TrainLog:
    samples: dict[int, int] = field(default_factory=dict)  # epoch -> samples consumed
    epoch_loss: dict[int, float] = field(default_factory=dict)  # epoch -> running mean loss
    losses: list[float] = field(default_factory=list)
    spans: dict[int, tuple[datetime, datetime]] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)  # samples/s the trainer logged, past each epoch's start

    @property
    def samples_seen(self) -> int:
        return sum(self.samples.values())

    @property
    def diverged(self) -> bool:
        return any(not math.isfinite(x) for x in self.losses)

    @property
    def steady_samples_per_s(self) -> float | None:
        """The median of the trainer's own throughput figures past each epoch's first line
        (start-up, compilation): what the run sustains, for its model-FLOPs utilisation."""
        return round(statistics.median(self.rates), 3) if self.rates else None

    @property
    def train_time_s(self) -> float:
        return sum((end - start).total_seconds() for start, end in self.spans.values())

    def loss_summary(self) -> dict[str, object]:
        finite = [x for x in self.losses if math.isfinite(x)]
        return {
            "first": self.losses[0] if self.losses else None,
            "last": self.losses[-1] if self.losses else None,
            "min": min(finite) if finite else None,
            "logged": len(self.losses),
            "epoch_mean": [self.epoch_loss[e] for e in sorted(self.epoch_loss)],
        }


def parse(text: str) -> TrainLog:
    """Every training line of a log; a resumed epoch keeps its latest lines."""
    log = TrainLog()
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        epoch, n = int(m["epoch"]), int(m["n"])
        when = datetime.strptime(m["time"], "%Y-%m-%d,%H:%M:%S")
        loss, avg = float(m["loss"]), float(m["avg"])
        log.losses.append(loss)
        log.samples[epoch] = n
        log.epoch_loss[epoch] = avg
        if epoch in log.spans and (rate := _RATE.search(line)):
            log.rates.append(float(rate["rate"]))
        start = log.spans.get(epoch, (when, when))[0]
        log.spans[epoch] = (min(start, when), when)
    return log
