"""Malformed tool responses the agent swallows.

A ``response_parsed`` stage with status ``error`` followed by the agent
re-entering reasoning, without an error event or error status in between,
means the agent carries on as if the tool had answered.
"""

from __future__ import annotations

from typing import Any

from app.detectors._state import State
from app.detectors.finding import Finding

__all__ = ["MalformedState", "detect_malformed"]


class MalformedState(State):
    pending: tuple[str, str] | None = None
    """(tool, event id) of a parse failure not yet surfaced."""


def detect_malformed(
    state: MalformedState, event: dict[str, Any]
) -> tuple[MalformedState, list[Finding]]:
    stage = event.get("tool_stage")
    failed = event.get("status") == "error" or event.get("event_type") == "error"
    if stage == "response_parsed" and failed:
        return MalformedState(pending=(event.get("tool_name") or "?", event["event_id"])), []
    if state.pending is None:
        return state, []
    if failed:
        return MalformedState(), []  # surfaced: the agent knows
    if stage == "reasoning_reentered" or event.get("event_type") == "step_start":
        tool, failure_id = state.pending
        finding = Finding.for_event(
            event,
            "malformed_response",
            f"the response of tool {tool!r} failed to parse and the agent re-entered "
            "reasoning without surfacing the error",
            evidence=(failure_id, event["event_id"]),
        )
        return MalformedState(), [finding]
    return state, []
