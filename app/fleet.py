"""The fleet view: what every task and agent is doing now. Pure functions over explicit state.

The worker keeps one :class:`TaskView` per task in a changelog-backed table
(keyed by task id: a task lives in one correlation chain, so its view is
written from one partition of the re-keyed stream, and a restarted worker
recovers it). The per-agent rows the dashboard and ``trc agents`` show are
derived from the agent's tasks with :func:`agent_rows`, at read time, with an
explicit ``now``.

Agent states: ``running``, ``paused``, ``killed``, ``finished`` (the task ended
with status ok or error) and ``silent`` (a running or paused agent whose
heartbeats stopped for two promised intervals, as the ``silent_agent``
detector decides).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.detectors.token_buckets import Buckets, add_tokens, tokens_in_window

__all__ = [
    "AgentRow",
    "TaskView",
    "agent_rows",
    "apply_event",
    "task_state",
    "tokens_per_minute",
]

US = 1_000_000

_SILENCE_INTERVALS = 2
"""Heartbeat intervals without a beat before an agent counts as silent (the detector's rule)."""

_ACK_STATES = {"killed": "killed", "paused": "paused", "resumed": "running", "rolled_back": None}
"""control_ack status -> task state; a rollback leaves the task as it was (it keeps running)."""

_ACTIVE = frozenset({"running", "paused"})


class TaskView(BaseModel):
    """One task as the operator sees it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: str
    agent_id: str
    agent_type: str | None = None
    correlation_id: str
    parent_task_id: str | None = None
    state: str = "running"
    """running | paused | killed | finished"""
    status: str | None = None
    """task_end status: ok | error | killed (None while the task runs)."""
    step_index: int = 0
    current_step: str | None = None
    """The action of the current step, or the tool it last called."""
    started_at: int | None = None
    ended_at: int | None = None
    last_event_at: int = 0
    last_heartbeat_at: int | None = None
    heartbeat_interval_s: float | None = None
    events: int = 0
    errors: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    token_buckets: Buckets = ()
    """Tokens of the last minute's llm calls, per second."""
    last_command_id: str | None = None
    partition: int = -1
    """The re-keyed stream's partition that writes this view (retention deletes go there)."""


class AgentRow(BaseModel):
    """One line of the fleet view: an agent, from its most recent task."""

    model_config = ConfigDict(frozen=True)

    agent_id: str
    agent_type: str | None
    state: str
    task_id: str
    correlation_id: str
    current_step: str | None
    step_index: int
    tokens_per_minute: int
    tokens: int
    cost_usd: float
    last_heartbeat_at: int | None
    last_event_at: int
    tasks: int
    errors: int


def tokens_per_minute(view: TaskView, now_us: int) -> int:
    """Tokens the task's model calls used in the last minute before ``now_us``."""
    return tokens_in_window(view.token_buckets, now_us)


def apply_event(view: TaskView | None, event: dict[str, Any], partition: int = -1) -> TaskView:
    """Fold one AgentEvent into its task's view (``view`` is None for an unseen task)."""
    if view is None:
        view = TaskView(
            task_id=event["task_id"],
            agent_id=event["agent_id"],
            correlation_id=event["correlation_id"],
            partition=partition,
        )
    at = int(event["emitted_at"])
    kind = event["event_type"]
    update: dict[str, Any] = {
        "events": view.events + 1,
        "last_event_at": max(view.last_event_at, at),
    }
    if partition >= 0 and view.partition != partition:
        update["partition"] = partition
    if event.get("agent_type") and view.agent_type is None:
        update["agent_type"] = event["agent_type"]
    if event.get("parent_task_id") and view.parent_task_id is None:
        update["parent_task_id"] = event["parent_task_id"]
    if event.get("heartbeat_interval_s"):
        update["heartbeat_interval_s"] = event["heartbeat_interval_s"]
    if kind == "task_start":
        update["started_at"] = at
    elif kind == "task_end":
        status = event.get("status") or "ok"
        update.update(
            ended_at=at, status=status, state="killed" if status == "killed" else "finished"
        )
    elif kind == "heartbeat":
        update["last_heartbeat_at"] = max(view.last_heartbeat_at or 0, at)
    elif kind == "control_ack":
        new_state = _ACK_STATES.get(event.get("status") or "")
        # An ack after the task ended must not bring it back to life.
        if new_state is not None and view.ended_at is None:
            update["state"] = new_state
        update["last_command_id"] = event.get("command_id")
    elif kind == "step_start":
        update.update(
            step_index=max(view.step_index, int(event.get("step_index") or 0)),
            current_step=event.get("action") or view.current_step,
        )
    elif kind == "tool_call" or (kind.startswith("tool") and event.get("tool_name")):
        update["current_step"] = f"{event.get('tool_name')}()"
    elif kind == "llm_call":
        # Spend is counted from llm calls only: step_end repeats the same tokens and cost.
        tokens = int(event.get("prompt_tokens") or 0) + int(event.get("completion_tokens") or 0)
        update.update(
            tokens=view.tokens + tokens,
            cost_usd=view.cost_usd + float(event.get("cost_usd") or 0.0),
            token_buckets=add_tokens(view.token_buckets, at, tokens),
        )
    if event.get("status") == "error" or kind == "error":
        update["errors"] = view.errors + 1
    return view.model_copy(update=update)


def task_state(view: TaskView, now_us: int) -> str:
    """The task's state at ``now_us``: a running task without heartbeats turns silent."""
    if view.state not in _ACTIVE or not view.heartbeat_interval_s:
        return view.state
    last_seen = max(view.last_heartbeat_at or 0, view.started_at or 0)
    if last_seen and now_us - last_seen > _SILENCE_INTERVALS * view.heartbeat_interval_s * US:
        return "silent"
    return view.state


def agent_rows(tasks: Iterable[TaskView], now_us: int) -> list[AgentRow]:
    """One row per agent, sorted by agent id; the most recently started task speaks for it."""
    by_agent: dict[str, list[TaskView]] = {}
    for task in tasks:
        by_agent.setdefault(task.agent_id, []).append(task)
    rows = []
    for agent_id in sorted(by_agent):
        views = by_agent[agent_id]
        # Prefer a live task: a finished one must not hide a run still going.
        latest = max(
            views,
            key=lambda v: (v.state in _ACTIVE, v.started_at or v.last_event_at, v.last_event_at),
        )
        beats = [v.last_heartbeat_at for v in views if v.last_heartbeat_at]
        rows.append(
            AgentRow(
                agent_id=agent_id,
                agent_type=latest.agent_type,
                state=task_state(latest, now_us),
                task_id=latest.task_id,
                correlation_id=latest.correlation_id,
                current_step=latest.current_step,
                step_index=latest.step_index,
                tokens_per_minute=sum(tokens_per_minute(v, now_us) for v in views),
                tokens=sum(v.tokens for v in views),
                cost_usd=round(sum(v.cost_usd for v in views), 6),
                last_heartbeat_at=max(beats) if beats else None,
                last_event_at=max(v.last_event_at for v in views),
                tasks=len(views),
                errors=sum(v.errors for v in views),
            )
        )
    return rows
