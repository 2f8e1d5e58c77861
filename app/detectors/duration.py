"""Time to completion against the agent type's baseline."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.detectors._state import US, Config, State, crossed
from app.detectors.finding import Finding

__all__ = ["DurationConfig", "DurationState", "detect_duration"]


class DurationConfig(Config):
    max_s: float = Field(900.0, gt=0, description="task duration at which it is a breach")


class DurationState(State):
    started_at: int | None = None
    reported: frozenset[str] = frozenset()


def detect_duration(
    state: DurationState, event: dict[str, Any], config: DurationConfig, warn_fraction: float
) -> tuple[DurationState, list[Finding]]:
    """The task's clock starts at its first event (``task_start`` if seen)."""
    now = event["emitted_at"]
    started = state.started_at if state.started_at is not None else now
    if event.get("event_type") == "task_start":
        started = min(started, now)
    elapsed_s = (now - started) / US
    level = crossed(elapsed_s, config.max_s, warn_fraction)
    if level is None or level in state.reported:
        return state.model_copy(update={"started_at": started}), []
    finding = Finding.for_event(
        event,
        "task_duration",
        f"task running for {elapsed_s:.0f} s (baseline {config.max_s:g} s)",
        level=level,
        value=elapsed_s,
        threshold=config.max_s,
    )
    return DurationState(started_at=started, reported=state.reported | {level}), [finding]
