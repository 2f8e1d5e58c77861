"""What a detector reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Finding", "Level", "Scope"]

Level = Literal["signal", "warning", "breach"]
"""signal: worth recording; warning: a threshold is near; breach: it is crossed."""

Scope = Literal["task", "chain", "agent"]


@dataclass(frozen=True)
class Finding:
    """One detector's verdict; ``evidence`` holds the ids of the events behind it."""

    detector: str
    agent_id: str
    task_id: str
    correlation_id: str
    detail: str
    evidence: tuple[str, ...]
    trigger_emitted_at: int
    """emitted_at (µs) of the event that completed the finding, or the check time."""
    level: Level = "breach"
    scope: Scope = "task"
    value: float | None = None
    threshold: float | None = None
    root_cause_event_id: str | None = None
    """For incidents spanning agents: the earliest failure in the causal chain."""

    @classmethod
    def for_event(
        cls,
        event: dict[str, Any],
        detector: str,
        detail: str,
        *,
        level: Level = "breach",
        value: float | None = None,
        threshold: float | None = None,
        evidence: tuple[str, ...] | None = None,
        scope: Scope = "task",
    ) -> Finding:
        """A finding about the task (or chain, or agent) that ``event`` belongs to."""
        return cls(
            detector=detector,
            agent_id=event["agent_id"],
            task_id=event["task_id"],
            correlation_id=event["correlation_id"],
            detail=detail,
            evidence=evidence if evidence is not None else (event["event_id"],),
            trigger_emitted_at=event["emitted_at"],
            level=level,
            scope=scope,
            value=value,
            threshold=threshold,
        )
