"""Reasoning loop: the same tool with equivalent arguments, again and again.

Two calls are equivalent when their normalized argument hashes match (key
order, whitespace, case and number format folded on the agent side) or when
their argument word sets are similar enough (estimated from MinHash sketches,
so rephrased text is caught without the text leaving the agent). The finding
fires on the call that makes the count reach ``max_repeats`` inside
``window_s``, so a kill lands before the next one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents_bridge.similarity import estimate_jaccard
from app.detectors.finding import Finding

__all__ = ["LoopConfig", "LoopWindow", "detect_loop"]

_US = 1_000_000


class LoopConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_repeats: int = Field(3, ge=2, description="equivalent calls that make a loop")
    window_s: float = Field(90.0, gt=0)
    similarity: float = Field(
        0.8, gt=0, le=1, description="word-set Jaccard at or above which arguments are equivalent"
    )
    max_calls: int = Field(500, ge=10, description="calls remembered per task")


class _Call(BaseModel):
    model_config = ConfigDict(frozen=True)

    at_us: int
    tool: str
    args_hash: str
    sketch: tuple[int, ...] = ()
    event_id: str


class LoopWindow(BaseModel):
    """Recent tool calls of one task, oldest first, and the calls a finding covered."""

    model_config = ConfigDict(frozen=True)

    calls: tuple[_Call, ...] = ()
    reported: frozenset[str] = frozenset()
    """Event ids already part of a finding: each loop is reported once."""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LoopWindow:
        return cls.model_validate(data) if data else cls()


def _equivalent(a: _Call, b: _Call, similarity: float) -> bool:
    if a.tool != b.tool:
        return False
    if a.args_hash == b.args_hash:
        return True
    return bool(a.sketch and b.sketch) and (
        estimate_jaccard(list(a.sketch), list(b.sketch)) >= similarity
    )


def detect_loop(
    window: LoopWindow, event: dict[str, Any], config: LoopConfig
) -> tuple[LoopWindow, Finding | None]:
    """Fold one event into ``window``; return the new window and a finding, if any.

    Only ``tool_call`` events count. A redelivered event (same event id) is
    ignored, so at-least-once delivery cannot fake a loop.
    """
    if event.get("event_type") != "tool_call" or not event.get("tool_name"):
        return window, None
    if any(c.event_id == event["event_id"] for c in window.calls):
        return window, None
    now = event["emitted_at"]
    horizon = now - int(config.window_s * _US)
    call = _Call(
        at_us=now,
        tool=event["tool_name"],
        args_hash=event.get("tool_args_hash") or "",
        sketch=tuple(event.get("tool_args_sketch") or ()),
        event_id=event["event_id"],
    )
    kept = [c for c in window.calls if c.at_us >= horizon][-(config.max_calls - 1) :]
    calls = (*kept, call)
    kept_ids = {c.event_id for c in calls}
    reported = frozenset(i for i in window.reported if i in kept_ids)
    repeats = [
        c for c in calls if c.event_id not in reported and _equivalent(c, call, config.similarity)
    ]
    if len(repeats) < config.max_repeats:
        return LoopWindow(calls=calls, reported=reported), None
    evidence = tuple(c.event_id for c in repeats)
    finding = Finding(
        detector="reasoning_loop",
        agent_id=event["agent_id"],
        task_id=event["task_id"],
        correlation_id=event["correlation_id"],
        detail=(
            f"tool {call.tool!r} called {len(repeats)} times with equivalent arguments "
            f"within {config.window_s:g} s"
        ),
        evidence=evidence,
        trigger_emitted_at=now,
        value=len(repeats),
        threshold=config.max_repeats,
    )
    return LoopWindow(calls=calls, reported=reported | set(evidence)), finding
