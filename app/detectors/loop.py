"""Reasoning-loop detector: the same tool with equivalent arguments, again and again.

The window is per task and holds the recent tool calls as (time, tool, args
hash, event id). A finding fires on the call that makes the count reach
``max_repeats`` inside ``window_s``, so a kill can land before the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.detectors.finding import Finding

__all__ = ["LoopConfig", "LoopWindow", "detect_loop"]

_US = 1_000_000


@dataclass(frozen=True)
class LoopConfig:
    max_repeats: int = 3
    window_s: float = 90.0


@dataclass(frozen=True)
class _Call:
    at_us: int
    tool: str
    args_hash: str
    event_id: str


@dataclass(frozen=True)
class LoopWindow:
    """Recent tool calls of one task, oldest first, and whether it already fired."""

    calls: tuple[_Call, ...] = ()
    fired_for: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": [[c.at_us, c.tool, c.args_hash, c.event_id] for c in self.calls],
            "fired_for": sorted(self.fired_for),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> LoopWindow:
        if not data:
            return cls()
        return cls(
            calls=tuple(_Call(*c) for c in data["calls"]),
            fired_for=frozenset(data["fired_for"]),
        )


def detect_loop(
    window: LoopWindow, event: dict[str, Any], config: LoopConfig
) -> tuple[LoopWindow, Finding | None]:
    """Fold one event into ``window``; return the new window and a finding, if any.

    Only ``tool_call`` events count. A redelivered event (same event id) is
    ignored, so at-least-once delivery cannot fake a loop. Each (tool, args)
    signature fires once per window.
    """
    if event.get("event_type") != "tool_call" or not event.get("tool_name"):
        return window, None
    if any(c.event_id == event["event_id"] for c in window.calls):
        return window, None
    now = event["emitted_at"]
    horizon = now - int(config.window_s * _US)
    call = _Call(now, event["tool_name"], event.get("tool_args_hash") or "", event["event_id"])
    calls = (*(c for c in window.calls if c.at_us >= horizon), call)
    signature = f"{call.tool}:{call.args_hash}"
    repeats = [c for c in calls if c.tool == call.tool and c.args_hash == call.args_hash]
    fired_for = frozenset(
        s for s in window.fired_for if any(f"{c.tool}:{c.args_hash}" == s for c in calls)
    )
    if len(repeats) < config.max_repeats or signature in fired_for:
        return LoopWindow(calls, fired_for), None
    finding = Finding(
        detector="reasoning_loop",
        agent_id=event["agent_id"],
        task_id=event["task_id"],
        correlation_id=event["correlation_id"],
        detail=(
            f"tool {call.tool!r} called {len(repeats)} times with equivalent arguments "
            f"within {config.window_s:g} s"
        ),
        evidence=tuple(c.event_id for c in repeats),
        trigger_emitted_at=now,
    )
    return LoopWindow(calls, fired_for | {signature}), finding
