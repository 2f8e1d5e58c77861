"""Baselines: per-agent-type thresholds from recorded runs (pure).

Normal behaviour is every task that ended with status ``ok``. For each agent
type, each measure's 95th percentile over normal tasks is where a warning
starts, and that times ``headroom`` is the breach threshold.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TaskProfile", "percentile", "profile_tasks", "thresholds"]

_US = 1_000_000


@dataclass
class TaskProfile:
    agent_type: str
    steps: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    first_us: int | None = None
    last_us: int = 0
    status: str | None = None
    step_tokens: dict[int, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.last_us - (self.first_us or self.last_us)) / _US

    @property
    def max_growth(self) -> float:
        """Largest tokens(step N) / tokens(step N-1) between consecutive steps."""
        steps = sorted(self.step_tokens)
        ratios = [
            self.step_tokens[b] / self.step_tokens[a]
            for a, b in itertools.pairwise(steps)
            if b == a + 1 and self.step_tokens[a] > 0
        ]
        return max(ratios, default=0.0)


def profile_tasks(events: Iterable[dict[str, Any]]) -> dict[str, TaskProfile]:
    """Fold events into one profile per task id."""
    tasks: dict[str, TaskProfile] = {}
    for event in events:
        task = tasks.get(event["task_id"])
        if task is None:
            task = tasks[event["task_id"]] = TaskProfile(event.get("agent_type") or "default")
        at = event["emitted_at"]
        task.first_us = at if task.first_us is None else min(task.first_us, at)
        task.last_us = max(task.last_us, at)
        kind = event["event_type"]
        if kind == "step_start":
            task.steps += 1
        elif kind == "llm_call":
            tokens = int(event.get("prompt_tokens") or 0) + int(event.get("completion_tokens") or 0)
            task.tokens += tokens
            task.cost_usd += float(event.get("cost_usd") or 0.0)
            step = int(event.get("step_index") or 0)
            task.step_tokens[step] = task.step_tokens.get(step, 0) + tokens
        elif kind == "task_end":
            task.status = event.get("status")
    return tasks


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def thresholds(
    tasks: dict[str, TaskProfile], headroom: float = 1.5, min_tasks: int = 20
) -> dict[str, dict[str, Any]]:
    """Policy overrides per agent type, as the ``agent_types`` table of a policy file.

    Types with fewer than ``min_tasks`` normal tasks are left out: too few runs
    make a threshold that is noise.
    """
    by_type: dict[str, list[TaskProfile]] = defaultdict(list)
    for task in tasks.values():
        if task.status == "ok":
            by_type[task.agent_type].append(task)
    result: dict[str, dict[str, Any]] = {}
    for agent_type, normal in sorted(by_type.items()):
        if len(normal) < min_tasks:
            continue

        def p95(values: list[float]) -> float:
            return percentile(values, 95)

        steps_warn = max(1, math.ceil(p95([t.steps for t in normal])))
        overrides: dict[str, Any] = {
            "steps": {
                "warn": steps_warn,
                "kill": max(steps_warn + 1, math.ceil(steps_warn * headroom)),
            },
            "duration": {
                "max_s": round(max(1.0, p95([t.duration_s for t in normal]) * headroom), 1)
            },
            "budget": {
                "task_tokens": max(1, math.ceil(p95([t.tokens for t in normal]) * headroom))
            },
        }
        costs = [t.cost_usd for t in normal]
        if any(costs):
            overrides["budget"]["task_cost_usd"] = round(p95(costs) * headroom, 4)
        growth = p95([t.max_growth for t in normal])
        if growth > 0:
            overrides["tokens"] = {"growth_factor": round(max(1.5, growth * headroom), 2)}
        result[agent_type] = overrides
    return result
