"""What a detector reports."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Finding"]


@dataclass(frozen=True)
class Finding:
    """One detector's verdict on one task; ``evidence`` holds the event ids behind it."""

    detector: str
    agent_id: str
    task_id: str
    correlation_id: str
    detail: str
    evidence: tuple[str, ...]
    trigger_emitted_at: int
    """emitted_at (µs) of the event that completed the finding."""
