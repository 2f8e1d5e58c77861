"""What every benchmark reports: sample summaries, the machine, a table and the JSON."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["machine", "print_summaries", "report", "summarize"]


def summarize(samples: list[float]) -> dict[str, float]:
    """n, median, p99 (the slowest sample when n < 100) and max of ``samples`` (NaN if none)."""
    if not samples:
        return {"n": 0, "median": math.nan, "p99": math.nan, "max": math.nan}
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


def print_summaries(results: dict[str, Any]) -> None:
    """The table of ``{"benchmarks": {name: {"unit": ..., label: summary or text}}}``."""
    print(f"\nmachine: {results['machine']}, broker: {results['broker']}")
    for name, figures in results["benchmarks"].items():
        print(f"\n{name} ({figures['unit']})")
        print(f"  {'measure':<46} {'n':>7} {'median':>10} {'p99':>10} {'max':>10}")
        for label, value in figures.items():
            if isinstance(value, dict):
                notes = ", ".join(
                    f"{k}: {v}" for k, v in value.items() if k not in ("n", "median", "p99", "max")
                )
                print(
                    f"  {label:<46} {value['n']:>7} {value['median']:>10.2f}"
                    f" {value['p99']:>10.2f} {value['max']:>10.2f}"
                    + (f"  ({notes})" if notes else "")
                )
            elif label != "unit":
                print(f"  {label:<46} {value}")


def report(
    results: dict[str, Any],
    json_path: Path | None,
    table: Callable[[dict[str, Any]], None] = print_summaries,
) -> int:
    """Print the readable table and the JSON (also to ``json_path``); the exit code."""
    table(results)
    text = json.dumps(results, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text + "\n")
    return 0
