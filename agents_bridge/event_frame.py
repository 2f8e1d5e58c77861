"""An agent event as the agent's thread hands it over: only what changes per event.

A run's identity (agent, task, chain, parents, producer) is the same in every
event it emits, so it is marshalled once per run and travels as bytes; the
frame adds the sequence number, type, step, time and the event's own fields.
The sender expands a frame into the full AgentEvent record and draws its event
id there, off the agent's thread. Measured on a 2-core VM with agents emitting
5,000 events/s: building and marshalling the full 19-field record cost the
agent's thread 14.5 µs median, 55 µs p99; the frame 7 / 37 µs.
"""

from __future__ import annotations

import marshal
import os
from typing import Any

from agents_bridge.codec import Record

__all__ = ["EventFrame", "FrameExpander", "run_identity"]

EventFrame = tuple[bytes, int, str, int, int, dict[str, Any]]
"""(run identity, sequence, event_type, step_index, emitted_at, the event's own fields)."""

_MAX_IDENTITIES = 10_000
"""Expanded identities kept; past this the cache starts over (a miss costs one loads)."""


def run_identity(**fields: str | None) -> bytes:
    """The fields every event of one run carries, marshalled once for all its frames."""
    return marshal.dumps(fields)


class FrameExpander:
    """Turns event frames into AgentEvent records, each with a new random event id."""

    def __init__(self) -> None:
        self._identities: dict[bytes, Record] = {}

    def record(self, frame: EventFrame) -> Record:
        identity, sequence, event_type, step_index, emitted_at, fields = frame
        constant = self._identities.get(identity)
        if constant is None:
            if len(self._identities) >= _MAX_IDENTITIES:
                self._identities.clear()
            constant = self._identities[identity] = marshal.loads(identity)
        return {
            "event_id": os.urandom(16).hex(),  # 128 random bits, as uuid4, cheaper
            **constant,
            "sequence": sequence,
            "event_type": event_type,
            "step_index": step_index,
            "emitted_at": emitted_at,
            **fields,
        }
