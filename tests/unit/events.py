"""Building AgentEvent dicts for unit tests."""

from __future__ import annotations

import uuid
from typing import Any

S = 1_000_000
"""One second in the wire's microseconds."""

SIX_STAGES = [
    "selected",
    "params_extracted",
    "invoked",
    "response_received",
    "response_parsed",
    "reasoning_reentered",
]
"""A tool call's stages, in the order the bridge emits them."""


def event(event_type: str, at_s: float = 1.0, **fields: Any) -> dict[str, Any]:
    """An event of task 't1' of agent 'a1' in chain 'c1', at ``at_s`` seconds."""
    return {
        "event_id": uuid.uuid4().hex,
        "event_type": event_type,
        "agent_id": "a1",
        "task_id": "t1",
        "correlation_id": "c1",
        "step_index": 0,
        "status": "ok",
        "emitted_at": int(at_s * S),
        **fields,
    }
