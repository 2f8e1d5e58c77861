"""Summaries every benchmark reports: sample count, median, p99 and max."""

from __future__ import annotations

import os
import platform
import statistics

__all__ = ["machine", "summarize"]


def summarize(samples: list[float]) -> dict[str, float]:
    """n, median, p99 (the slowest sample when n < 100) and max of ``samples``."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


def machine() -> str:
    """The machine the figures come from, for the report."""
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
