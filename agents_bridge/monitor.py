"""The monitor: one per process, serving every agent run in it."""

from __future__ import annotations

import collections
import itertools
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from agents_bridge import propagation
from agents_bridge.codec import Record
from agents_bridge.control import ControlListener
from agents_bridge.emitter import Emitter
from agents_bridge.pricing import PriceTable
from agents_bridge.run import AgentRun, RunSettings
from agents_bridge.settings import Settings, load_settings
from agents_bridge.topics import events_topic
from agents_bridge.validation import InputGuard

__all__ = ["Monitor"]

_log = logging.getLogger(__name__)
_SEEN_COMMANDS = 10_000
_NOT_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class Monitor:
    """Emits agent events in the background and applies control commands.

    >>> with Monitor() as monitor:
    ...     with monitor.run("researcher-1") as run:
    ...         run.step("search")
    ...         run.tool_call("web_search", {"q": "kafka"})

    ``redact`` rewrites every free-text field before it leaves the process;
    ``prices`` overrides the per-model price table (USD per 1M prompt and
    completion tokens).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redact: Callable[[str], str] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._emitter = Emitter(self.settings)
        self._listener = ControlListener(self.settings, self._apply_command)
        self._guard = InputGuard(self.settings.strict, self.settings.max_text_chars, redact)
        self._shared = RunSettings(
            emit=self._emitter.emit,
            on_close=self._forget,
            guard=self._guard,
            prices=PriceTable.load(self.settings.price_table_file, prices),
            producer_id=uuid.uuid4().hex,
            sequence=itertools.count(1),
            capture_tool_args=self.settings.capture_tool_args,
            capture_reasoning=self.settings.capture_reasoning,
            capture_context=self.settings.capture_context,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
        )
        self._runs: set[AgentRun] = set()
        self._runs_lock = threading.Lock()
        self._seen_commands: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._started = False
        self._stop_beating = threading.Event()
        self._beater = threading.Thread(target=self._beat, name="trc-heartbeat", daemon=True)

    def start(self) -> Monitor:
        """Start the event producer and the control listener; idempotent.

        Never fails for an unreachable broker: events spill to the journal and
        the listener attaches when ``trc.control`` becomes readable.
        """
        if not self._started:
            self._emitter.start()
            if not self._listener.start(self.settings.control_attach_timeout_s):
                _log.warning("control listener not attached yet; kills apply once it is")
            self._beater.start()
            self._started = True
        return self

    def close(self) -> None:
        """Flush events (bounded by ``flush_timeout_s``; the rest waits in the journal)."""
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
        carrier: Mapping[str, str | bytes] | None = None,
    ) -> AgentRun:
        """A run of ``agent_id`` on one task; enter it to emit task_start.

        The parent and the correlation chain come from, in order: the explicit
        arguments, ``carrier`` (headers from another process), the run being
        executed in this context (a sub-agent), or nothing (a new chain).
        ``agent_type`` selects the policy overrides and baselines for this agent.
        """
        agent_id = self._valid_agent_id(agent_id)
        parent = propagation.from_carrier(carrier) if carrier else propagation.current()
        task_id = task_id or uuid.uuid4().hex
        run = AgentRun(
            self._shared,
            agent_id=agent_id,
            agent_type=agent_type,
            task_id=task_id,
            correlation_id=correlation_id or (parent.correlation_id if parent else task_id),
            parent_agent_id=parent_agent_id or (parent.agent_id if parent else None),
            parent_task_id=parent_task_id or (parent.task_id if parent else None),
        )
        spawner = self._run_of(propagation.current()) if not carrier else None
        if spawner is not None:
            spawner._event(
                "subagent_spawn", attributes={"child_agent_id": agent_id, "child_task_id": task_id}
            )
        with self._runs_lock:
            self._runs.add(run)
        return run

    def _valid_agent_id(self, agent_id: str) -> str:
        try:
            events_topic(agent_id)
            return agent_id
        except ValueError as exc:
            self._guard.reject("bad_agent_id", f"{exc}; characters replaced by '_'")
            return _NOT_TOPIC_SAFE.sub("_", agent_id)[:200] or "unnamed"

    def _run_of(self, context: propagation.RunContext | None) -> AgentRun | None:
        if context is None:
            return None
        with self._runs_lock:
            return next((r for r in self._runs if r.task_id == context.task_id), None)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far was sent or journaled."""
        return self._emitter.flush(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters: queued, sent, spilled, replayed, dropped, invalid input, commands."""
        return dict(
            self._emitter.describe(),
            invalid_input=dict(self._guard.problems),
            rejected_commands=self._listener.rejected,
        )

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
        self._seen_commands[command["command_id"]] = None
        if len(self._seen_commands) > _SEEN_COMMANDS:
            self._seen_commands.popitem(last=False)
        with self._runs_lock:
            targets = [run for run in self._runs if run.matches(command)]
        for run in targets:
            _log.warning(
                "%s %s (task %s): %s", command["kind"], run.agent_id, run.task_id, command["reason"]
            )
            run.apply(command)
