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
from agents_bridge.actions import ActionRegistry
from agents_bridge.actions import registry as default_registry
from agents_bridge.clock import now_us
from agents_bridge.codec import Record
from agents_bridge.command_gate import CommandGate
from agents_bridge.control import ControlListener
from agents_bridge.pricing import PriceTable
from agents_bridge.rollback_runner import RollbackRunner
from agents_bridge.run import AgentRun, RunSettings
from agents_bridge.sender_process import SenderProcess
from agents_bridge.settings import Settings, load_settings
from agents_bridge.signing import CommandSigner
from agents_bridge.topics import CHECKPOINTS, events_topic
from agents_bridge.validation import InputGuard

__all__ = ["Monitor"]

_log = logging.getLogger(__name__)
_RECENT_RUNS = 1_000
_NOT_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class Monitor:
    """Emits agent events in the background and applies control commands.

    >>> with Monitor() as monitor:
    ...     with monitor.run("researcher-1") as run:
    ...         run.step("search")
    ...         run.tool_call("web_search", {"q": "kafka"})

    ``redact`` rewrites every free-text field before it leaves the process;
    ``prices`` overrides the per-model price table (USD per 1M prompt and
    completion tokens); ``registry`` is the action registry ROLLBACK consults
    (default: :data:`agents_bridge.actions.registry`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redact: Callable[[str], str] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        registry: ActionRegistry | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._emitter = SenderProcess(self.settings)
        self._gate = CommandGate(CommandSigner(self.settings.signing_keys.get_secret_value()))
        self._listener = ControlListener(self.settings, self._receive, self._clear)
        self._rollbacks = RollbackRunner(self._emitter, self._recent_runs)
        self.rejected_commands: collections.Counter[str] = collections.Counter()
        """Commands refused by reason: unsigned, unknown_key, forged, expired, replayed."""
        self._guard = InputGuard(self.settings.strict, self.settings.max_text_chars, redact)
        self._shared = RunSettings(
            emit=self._emitter.emit,
            on_close=self._forget,
            checkpoint=self._checkpoint,
            guard=self._guard,
            prices=PriceTable.load(self.settings.price_table_file, prices),
            producer_id=uuid.uuid4().hex,
            sequence=itertools.count(1),
            capture_tool_args=self.settings.capture_tool_args,
            capture_reasoning=self.settings.capture_reasoning,
            capture_context=self.settings.capture_context,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
            registry=registry or default_registry,
        )
        self._runs: set[AgentRun] = set()
        self._recent: collections.OrderedDict[str, AgentRun] = collections.OrderedDict()
        """Finished runs by task id, newest last: a ROLLBACK may come after the end."""
        self._runs_lock = threading.Lock()
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
            self._rollbacks.close()
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
        now = now_us()
        for command in list(self._gate.standing.values()):
            # A standing KILL or PAUSE also holds for runs that start after it.
            expires_at = command.get("expires_at")
            if run.matches(command) and (expires_at is None or expires_at > now):
                run.apply(command)
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
            rejected_commands=dict(self.rejected_commands, undecodable=self._listener.rejected),
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
            self._recent[run.task_id] = run
            if len(self._recent) > _RECENT_RUNS:
                self._recent.popitem(last=False)

    def _recent_runs(self, command: Record) -> list[AgentRun]:
        with self._runs_lock:
            return [run for run in self._recent.values() if run.matches(command)]

    # -- control (on the listener's thread) --------------------------------------

    def _receive(self, command: Record, live: bool) -> None:
        reason = self._gate.rejection(command, now_us())
        with self._runs_lock:
            targets = [run for run in self._runs if run.matches(command)]
        if reason is not None:
            if not live and reason in ("expired", "replayed"):
                return  # history: superseded or lapsed commands are not an attack
            self.rejected_commands[reason] += 1
            _log.warning(
                "rejected %s %s for %s %s: %s",
                command.get("kind"),
                command.get("command_id"),
                command.get("target_type"),
                command.get("target_id"),
                reason,
            )
            for run in targets:
                run.reject(command, reason)
            return
        for run in targets:
            _log.warning(
                "%s %s (task %s): %s", command["kind"], run.agent_id, run.task_id, command["reason"]
            )
            run.apply(command)
        if command["kind"] == "ROLLBACK":
            self._rollbacks.submit(command, targets)

    def _clear(self, key: str) -> None:
        self._gate.clear(key)

    def _checkpoint(self, run: AgentRun, command: Record) -> None:
        with run._lock:
            actions = [action.as_record() for action in run.actions]
        self._emitter.emit_to(
            "trc.Checkpoint",
            CHECKPOINTS,
            run.task_id,
            {
                "checkpoint_id": uuid.uuid4().hex,
                "command_id": command["command_id"],
                "command_kind": command["kind"],
                "reason": command.get("reason") or "",
                "agent_id": run.agent_id,
                "task_id": run.task_id,
                "correlation_id": run.correlation_id,
                "last_step_index": run.step_index,
                "last_action": run.last_action,
                "actions": actions,
                "created_at": now_us(),
            },
        )
