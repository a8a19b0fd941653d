"""Turning repeated runs into medians with their spread: what every bench table shows."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

METRICS: tuple[str, ...] = (
    "cold_load_s",
    "warm_load_s",
    "first_call_s",
    "ttft_s",
    "decode_tokens_per_s",
    "e2e_tokens_per_s",
    "peak_rss_bytes",
)
"""The summarised metrics, in display order."""

HIGHER_IS_BETTER = frozenset({"decode_tokens_per_s", "e2e_tokens_per_s"})

# -- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Median and range of one metric over the runs."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        clean = [float(v) for v in values if v is not None]
        if not clean:
            return None
        return cls(statistics.median(clean), min(clean), max(clean), len(clean))

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def summarize(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> dict[str, dict[str, Any]]:
    """``{metric: {"median", "min", "max", "n"}}`` over the runs that have the metric."""
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        stat = Stat.of([r[metric] for r in runs if r.get(metric) is not None])
        if stat is not None:
            out[metric] = stat.as_dict()
    return out
