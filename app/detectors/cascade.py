"""Cascades: failures in two or more agents of one correlation chain are one incident.

The incident names its root cause: the earliest failure in the chain's window,
preferring a failure whose task is an ancestor (by parent links) of the others.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from app.detectors._state import US, Config, State
from app.detectors.finding import Finding

__all__ = ["CascadeConfig", "ChainFailures", "Failure", "detect_cascade"]


class CascadeConfig(Config):
    min_agents: int = Field(2, ge=2, description="failing agents in one chain that are an incident")
    window_s: float = Field(300.0, gt=0)


class Failure(State):
    at_us: int
    agent_id: str
    task_id: str
    parent_task_id: str | None = None
    event_id: str
    what: str


class ChainFailures(State):
    failures: tuple[Failure, ...] = ()
    reported_agents: frozenset[str] = frozenset()
    parents: dict[str, str] = Field(default_factory=dict)
    """task id -> parent task id, as seen in the chain."""


def _root_cause(failures: tuple[Failure, ...], parents: dict[str, str]) -> Failure:
    def depth(task_id: str) -> int:
        seen, d = set(), 0
        while task_id in parents and task_id not in seen:
            seen.add(task_id)
            task_id, d = parents[task_id], d + 1
        return d

    # Shallowest in the task graph first (closest to the root), then earliest.
    return min(failures, key=lambda f: (depth(f.task_id), f.at_us))


def detect_cascade(
    state: ChainFailures, event: dict[str, Any], failure: str | None, config: CascadeConfig
) -> tuple[ChainFailures, list[Finding]]:
    """Fold an event in; ``failure`` describes it when it is an error or an anomaly."""
    parents = state.parents
    parent = event.get("parent_task_id")
    if parent and parents.get(event["task_id"]) != parent:
        parents = {**parents, event["task_id"]: parent}
    if failure is None:
        return (
            state if parents is state.parents else state.model_copy(update={"parents": parents})
        ), []
    now = event["emitted_at"]
    horizon = now - int(config.window_s * US)
    failures = (
        *(f for f in state.failures if f.at_us > horizon),
        Failure(
            at_us=now,
            agent_id=event["agent_id"],
            task_id=event["task_id"],
            parent_task_id=parent,
            event_id=event["event_id"],
            what=failure,
        ),
    )
    agents = {f.agent_id for f in failures}
    new_state = ChainFailures(
        failures=failures, reported_agents=state.reported_agents, parents=parents
    )
    if len(agents) < config.min_agents or agents <= state.reported_agents:
        return new_state, []
    root = _root_cause(failures, parents)
    finding = Finding.for_event(
        event,
        "cascade",
        f"{len(agents)} agents of chain {event['correlation_id']} failing within "
        f"{config.window_s:g} s; root cause: {root.what} in {root.agent_id} (task {root.task_id})",
        value=len(agents),
        threshold=config.min_agents,
        scope="chain",
        evidence=tuple(f.event_id for f in failures),
    )
    finding = dataclasses.replace(finding, root_cause_event_id=root.event_id)
    return new_state.model_copy(update={"reported_agents": frozenset(agents)}), [finding]
