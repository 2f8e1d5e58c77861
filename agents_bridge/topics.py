"""Topic names: the one place both sides agree on them."""

from __future__ import annotations

import re

__all__ = [
    "ANOMALIES",
    "AUDIT",
    "CHECKPOINTS",
    "CONTROL",
    "DEAD_LETTER",
    "ESCALATIONS",
    "EVENTS_PATTERN",
    "EVENTS_PREFIX",
    "events_topic",
]

CONTROL = "trc.control"
ANOMALIES = "trc.anomalies"
DEAD_LETTER = "trc.deadletter"
CHECKPOINTS = "trc.checkpoints"
"""Halted tasks' state (last step, action journal), for human review."""
ESCALATIONS = "trc.escalations"
"""Actions a rollback could not undo, for a human."""
AUDIT = "trc.audit"
"""Every command issued, acknowledged or rejected: the control audit trail."""
EVENTS_PREFIX = "trc.events."
EVENTS_PATTERN = re.compile(r"^trc\.events\.[A-Za-z0-9._-]+$")

_AGENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def events_topic(agent_id: str) -> str:
    """The per-agent event topic; agent ids must be valid Kafka topic characters."""
    if not _AGENT_ID.match(agent_id):
        raise ValueError(
            f"agent_id {agent_id!r} must be 1-200 characters of letters, digits, '.', '_' or '-'"
        )
    return EVENTS_PREFIX + agent_id
