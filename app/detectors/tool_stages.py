"""Which tool_call events mean what: a whole call in one event, or one of six stages."""

from __future__ import annotations

from typing import Any

__all__ = ["is_invocation", "is_outcome"]


def is_invocation(event: dict[str, Any]) -> bool:
    """The tool was called: a whole-call event or the ``invoked`` stage."""
    return (
        event.get("event_type") == "tool_call"
        and bool(event.get("tool_name"))
        and event.get("tool_stage") in (None, "invoked")
    )


def is_outcome(event: dict[str, Any]) -> bool:
    """The tool's result is known: a whole-call event or ``response_received``."""
    return (
        event.get("event_type") == "tool_call"
        and bool(event.get("tool_name"))
        and event.get("tool_stage") in (None, "response_received")
    )
