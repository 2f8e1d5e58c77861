"""Silent agents: no heartbeat for ``missed_intervals`` of the agent's own interval.

The state is folded by heartbeats and checked by a timer, so a dead process is
noticed without any new event arriving.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.detectors._state import US, Config, State
from app.detectors.finding import Finding

__all__ = ["Heartbeat", "SilenceConfig", "check_silence", "record_heartbeat"]


class SilenceConfig(Config):
    missed_intervals: float = Field(2.0, ge=1, description="missed heartbeats that are silence")
    default_interval_s: float = Field(10.0, gt=0)


class Heartbeat(State):
    agent_id: str = ""
    agent_type: str | None = None
    task_id: str = ""
    correlation_id: str = ""
    last_seen: int = 0
    last_event_id: str = ""
    interval_s: float | None = None
    stopped: bool = False
    """The run ended or the executor said goodbye: its silence is expected."""
    alerted: bool = False


def record_heartbeat(state: Heartbeat, event: dict[str, Any]) -> Heartbeat:
    """Any event proves the agent alive; heartbeats also carry the interval."""
    if event["emitted_at"] < state.last_seen:
        return state  # out of order: an older event says nothing new
    return Heartbeat(
        agent_id=event["agent_id"],
        agent_type=event.get("agent_type"),
        task_id=event["task_id"],
        correlation_id=event["correlation_id"],
        last_seen=event["emitted_at"],
        last_event_id=event["event_id"],
        interval_s=event.get("heartbeat_interval_s") or state.interval_s,
        stopped=event.get("event_type") == "task_end"
        or (event.get("event_type") == "heartbeat" and event.get("status") == "stopped"),
    )


def check_silence(
    state: Heartbeat, now_us: int, config: SilenceConfig
) -> tuple[Heartbeat, Finding | None]:
    """At ``now_us``: a finding once per silence, for agents that beat at least once."""
    if state.stopped or state.alerted or state.interval_s is None:
        return state, None
    silent_s = (now_us - state.last_seen) / US
    limit = config.missed_intervals * (state.interval_s or config.default_interval_s)
    if silent_s < limit:
        return state, None
    finding = Finding(
        detector="silent_agent",
        agent_id=state.agent_id,
        task_id=state.task_id,
        correlation_id=state.correlation_id,
        detail=f"no heartbeat for {silent_s:.1f} s (interval {state.interval_s:g} s)",
        evidence=(state.last_event_id,),
        trigger_emitted_at=now_us,
        scope="agent",
        value=silent_s,
        threshold=limit,
    )
    return state.model_copy(update={"alerted": True}), finding
