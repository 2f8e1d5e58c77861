"""The monitor: one per process, serving every agent run in it."""

from __future__ import annotations

import logging
import threading
import uuid
from types import TracebackType
from typing import Any

from agents_bridge.codec import Record
from agents_bridge.control import ControlListener
from agents_bridge.emitter import Emitter
from agents_bridge.run import AgentRun
from agents_bridge.settings import Settings, load_settings
from agents_bridge.topics import events_topic

__all__ = ["Monitor"]

_log = logging.getLogger(__name__)


class Monitor:
    """Emits agent events in the background and applies control commands.

    >>> with Monitor() as monitor:
    ...     with monitor.run("researcher-1") as run:
    ...         run.step("search")
    ...         run.tool_call("web_search", {"q": "kafka"})
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._emitter = Emitter(self.settings)
        self._listener = ControlListener(self.settings, self._apply_command)
        self._runs: set[AgentRun] = set()
        self._runs_lock = threading.Lock()
        self._seen_commands: set[str] = set()
        self._started = False
        self._stop_beating = threading.Event()
        self._beater = threading.Thread(target=self._beat, name="trc-heartbeat", daemon=True)

    def start(self) -> Monitor:
        """Connect the event producer and the control listener; idempotent."""
        if not self._started:
            self._emitter.start()
            if not self._listener.start(self.settings.control_attach_timeout_s):
                _log.warning("control listener not attached yet; kills apply once it is")
            self._beater.start()
            self._started = True
        return self

    def close(self) -> None:
        """Flush events (bounded by ``flush_timeout_s``) and disconnect."""
        if self._started:
            self._stop_beating.set()
            self._beater.join(5)
            self._listener.close()
            self._emitter.close()
            self._started = False

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(
        self,
        agent_id: str,
        *,
        agent_type: str | None = None,
        task_id: str | None = None,
        correlation_id: str | None = None,
        parent_agent_id: str | None = None,
        parent_task_id: str | None = None,
    ) -> AgentRun:
        """A run of ``agent_id`` on one task; enter it to emit task_start.

        ``agent_type`` selects the policy overrides and baselines for this agent;
        ``correlation_id`` defaults to the task id (a chain of one).
        """
        events_topic(agent_id)  # validates the id before anything is emitted
        task_id = task_id or uuid.uuid4().hex
        run = AgentRun(
            self._emitter.emit,
            self._forget,
            agent_id=agent_id,
            agent_type=agent_type,
            task_id=task_id,
            correlation_id=correlation_id or task_id,
            parent_agent_id=parent_agent_id,
            parent_task_id=parent_task_id,
            capture_tool_args=self.settings.capture_tool_args,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
        )
        with self._runs_lock:
            self._runs.add(run)
        return run

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far reached the broker."""
        return self._emitter.flush(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters: queued, sent, dropped, rejected, pending, rejected commands."""
        return dict(self._emitter.describe(), rejected_commands=self._listener.rejected)

    def _beat(self) -> None:
        # A daemon thread: it beats while agent code is busy and dies with the process,
        # so silence means the executor is stuck or gone.
        interval = self.settings.heartbeat_interval_s
        while not self._stop_beating.wait(interval):
            for run in self._active_runs():
                run.heartbeat(interval)
        for run in self._active_runs():
            run.heartbeat(interval, stopped=True)  # a clean exit is not silence

    def _active_runs(self) -> list[AgentRun]:
        with self._runs_lock:
            return list(self._runs)

    def _forget(self, run: AgentRun) -> None:
        with self._runs_lock:
            self._runs.discard(run)

    def _apply_command(self, command: Record) -> None:
        if command["command_id"] in self._seen_commands:
            return  # idempotent by command_id
        self._seen_commands.add(command["command_id"])
        with self._runs_lock:
            targets = [run for run in self._runs if run.matches(command)]
        for run in targets:
            _log.warning(
                "%s %s (task %s): %s", command["kind"], run.agent_id, run.task_id, command["reason"]
            )
            run.apply(command)
