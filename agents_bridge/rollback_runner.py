"""Runs ROLLBACK commands off the control listener's thread, one at a time."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable

from agents_bridge.clock import now_us
from agents_bridge.codec import Record
from agents_bridge.rollback import RollbackStep, compensate, plan_rollback
from agents_bridge.run import AgentRun
from agents_bridge.sender_process import SenderProcess
from agents_bridge.topics import ESCALATIONS

__all__ = ["RollbackRunner"]

_log = logging.getLogger(__name__)
_HALT_WAIT_S = 30.0
"""How long a rollback waits for a running task to reach a boundary and stop."""


class RollbackRunner:
    """Undoes the tasks a ROLLBACK names: newest action first, one task after another.

    Compensations are user code that may be slow or retried, so they run on
    this thread, never on the listener's (which must stay free for KILLs).
    """

    def __init__(
        self, emitter: SenderProcess, finished_runs: Callable[[Record], list[AgentRun]]
    ) -> None:
        self._emitter = emitter
        self._finished_runs = finished_runs
        self._queue: queue.Queue[tuple[Record, list[AgentRun]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="trc-rollback", daemon=True)
        self._thread.start()

    def submit(self, command: Record, running: list[AgentRun]) -> None:
        """Roll back the runs ``command`` addresses: ``running`` ones once they halt."""
        self._queue.put((command, running))

    def close(self, timeout_s: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            command, running = item
            runs = {run.task_id: run for run in [*self._finished_runs(command), *running]}
            for run in runs.values():
                try:
                    self._roll_back(run, command)
                except Exception:
                    _log.exception("rollback of task %s failed", run.task_id)

    def _roll_back(self, run: AgentRun, command: Record) -> None:
        if not run.finished.wait(_HALT_WAIT_S):
            _log.warning(
                "task %s did not stop within %.0f s; rolling back what it did so far",
                run.task_id,
                _HALT_WAIT_S,
            )
        with run._lock:
            actions = list(run.actions)
        failed = 0
        for step in plan_rollback(actions):
            if step.do == "compensate":
                failed += self._compensate(run, step, command)
            elif step.do == "escalate":
                self._escalate(run, step, command, step.reason, "")
        run._acknowledge(command, "rolled_back" if not failed else "rollback_incomplete")

    def _compensate(self, run: AgentRun, step: RollbackStep, command: Record) -> int:
        name = step.action.spec.name

        def report(attempt: int, error: BaseException | None) -> None:
            run._event(
                "compensation",
                tool_name=name,
                command_id=command["command_id"],
                status="error" if error else "ok",
                retry_count=attempt - 1,
                error_type=type(error).__name__ if error else None,
                error_message=str(error)[:500] if error else None,
            )

        error = compensate(step, on_attempt=report)
        if error is None:
            step.action.status = "compensated"
            return 0
        self._escalate(
            run, step, command, "compensation_failed", f"{type(error).__name__}: {error}"
        )
        return 1

    def _escalate(
        self, run: AgentRun, step: RollbackStep, command: Record, reason: str, detail: str
    ) -> None:
        action = step.action
        action.status = "escalated"
        _log.warning("task %s: %s action %s needs a human", run.task_id, reason, action.spec.name)
        self._emitter.emit_to(
            "trc.Escalation",
            ESCALATIONS,
            run.task_id,
            {
                "escalation_id": uuid.uuid4().hex,
                "command_id": command["command_id"],
                "agent_id": run.agent_id,
                "task_id": run.task_id,
                "correlation_id": run.correlation_id,
                "tool_name": action.spec.name,
                "reason": reason,
                "detail": detail[:2000],
                "step_index": action.step_index,
                "tool_args_hash": action.args_hash,
                "created_at": now_us(),
            },
        )
