"""Undoing a task: its action journal, the rollback plan, and running the plan.

Each tool call a run makes is journaled with its arguments and result (kept in
the process: compensations need them; only a hash leaves it). A rollback
walks the journal newest first: ``read`` calls need nothing, ``write`` calls
run their compensation (retried), and irreversible or unregistered calls are
escalated to a human on ``trc.escalations``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agents_bridge.actions import ActionSpec
from agents_bridge.clock import now_us

__all__ = ["JournaledAction", "RollbackStep", "compensate", "plan_rollback"]


@dataclass
class JournaledAction:
    """One tool call of a task, as the rollback needs it."""

    spec: ActionSpec
    args: Any
    step_index: int
    args_hash: str | None = None
    result: Any = None
    status: str = "in_flight"
    at: int = field(default_factory=now_us)

    def as_record(self) -> dict[str, Any]:
        """The checkpoint form: no raw arguments or results."""
        return {
            "tool_name": self.spec.name,
            "kind": self.spec.kind,
            "registered": self.spec.registered,
            "status": self.status,
            "step_index": self.step_index,
            "tool_args_hash": self.args_hash,
            "at": self.at,
        }


@dataclass(frozen=True)
class RollbackStep:
    """What the rollback does about one journaled action."""

    action: JournaledAction
    do: Literal["compensate", "escalate", "nothing"]
    reason: str


def plan_rollback(actions: Sequence[JournaledAction]) -> list[RollbackStep]:
    """Newest first: compensate writes, escalate what cannot be undone. Pure."""
    steps = []
    for action in reversed(actions):
        spec = action.spec
        if action.status in ("compensated", "escalated"):
            steps.append(RollbackStep(action, "nothing", f"already {action.status}"))
        elif not spec.registered:
            steps.append(RollbackStep(action, "escalate", "unregistered"))
        elif spec.kind == "irreversible":
            steps.append(RollbackStep(action, "escalate", "irreversible"))
        elif spec.kind == "write" and action.status == "ok":
            steps.append(RollbackStep(action, "compensate", "write"))
        elif spec.kind == "write" and action.status == "in_flight":
            # Interrupted mid-call: whether it took effect is unknown, so a human decides.
            steps.append(RollbackStep(action, "escalate", "interrupted"))
        else:
            # A read changed nothing; a write that failed is assumed not applied.
            steps.append(RollbackStep(action, "nothing", spec.kind))
    return steps


def compensate(
    step: RollbackStep,
    *,
    attempts: int = 3,
    backoff_s: float = 0.2,
    on_attempt: Callable[[int, BaseException | None], None] = lambda attempt, error: None,
) -> BaseException | None:
    """Run one compensation with retries; returns the last error, or None on success."""
    compensation = step.action.spec.compensate
    assert compensation is not None, "only write actions are compensated"
    error: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            compensation(step.action.args, step.action.result)
        except Exception as exc:  # user code: any failure is retried, then escalated
            error = exc
            on_attempt(attempt, exc)
            if attempt < attempts:
                time.sleep(backoff_s * attempt)
            continue
        on_attempt(attempt, None)
        return None
    return error
