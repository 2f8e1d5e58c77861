"""Retry storms: the same failing tool retried more than ``max_retries`` times."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.detectors._state import Config, State
from app.detectors.finding import Finding
from app.detectors.tool_stages import is_outcome

__all__ = ["RetryConfig", "RetryState", "detect_retries"]


class RetryConfig(Config):
    max_retries: int = Field(5, ge=1, description="retries of one failing tool that are allowed")


class RetryState(State):
    failures: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """tool -> event ids of its consecutive failed calls."""
    reported: frozenset[str] = frozenset()


def detect_retries(
    state: RetryState, event: dict[str, Any], config: RetryConfig
) -> tuple[RetryState, list[Finding]]:
    if not is_outcome(event):
        return state, []
    tool: str = event["tool_name"]
    failures = dict(state.failures)
    if event.get("status") != "error":
        failures.pop(tool, None)  # a success ends the storm
        return RetryState(failures=failures, reported=state.reported - {tool}), []
    ids = (*failures.get(tool, ()), event["event_id"])[-(config.max_retries + 2) :]
    failures[tool] = ids
    # The first failed call is not a retry; retries = failed calls - 1, or what the agent says.
    retries = max(len(ids) - 1, int(event.get("retry_count") or 0))
    if retries <= config.max_retries or tool in state.reported:
        return RetryState(failures=failures, reported=state.reported), []
    finding = Finding.for_event(
        event,
        "retry_storm",
        f"tool {tool!r} failed and was retried {retries} times (allowed {config.max_retries})",
        value=retries,
        threshold=config.max_retries,
        evidence=ids,
    )
    return RetryState(failures=failures, reported=state.reported | {tool}), [finding]
