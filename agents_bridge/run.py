"""One agent's run of one task: the handle agent code emits through and is stopped by."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from agents_bridge.canonical import args_hash, canonical_json
from agents_bridge.clock import now_us
from agents_bridge.codec import Record
from agents_bridge.emitter import SKETCH_SOURCE

__all__ = ["AgentKilled", "AgentRun"]


class AgentKilled(Exception):
    """Raised at the next step or tool boundary after a KILL reached this run."""

    def __init__(self, command: Record) -> None:
        reason = command.get("reason") or "no reason"
        super().__init__(f"agent killed by command {command['command_id']}: {reason}")
        self.command = command


class AgentRun:
    """Emits the events of one task and enforces the commands addressed to it.

    Use as a context manager (sync or async). Call :meth:`step` at each
    reasoning step and :meth:`tool_call` for each tool invocation; both raise
    :class:`AgentKilled` once a KILL has arrived. Inside ``async with``, the
    enclosing asyncio task is cancelled at once by a KILL.
    """

    def __init__(
        self,
        emit: Callable[[Record], None],
        on_close: Callable[[AgentRun], None],
        *,
        agent_id: str,
        agent_type: str | None,
        task_id: str,
        correlation_id: str,
        parent_agent_id: str | None,
        parent_task_id: str | None,
        capture_tool_args: bool,
        heartbeat_interval_s: float,
    ) -> None:
        self.agent_id = agent_id
        self.agent_type = agent_type
        self.task_id = task_id
        self.correlation_id = correlation_id
        self.parent_agent_id = parent_agent_id
        self.parent_task_id = parent_task_id
        self.step_index = 0
        self.kill_command: Record | None = None
        self.kill_latency_ms: float | None = None
        """Command issued -> this run halted, once a KILL took effect."""
        self._emit = emit
        self._on_close = on_close
        self._capture_tool_args = capture_tool_args
        self._heartbeat_interval_s = heartbeat_interval_s
        self._lock = threading.Lock()
        self._acked = False
        self._task: asyncio.Task[Any] | None = None
        self._task_loop: asyncio.AbstractEventLoop | None = None

    # -- events ---------------------------------------------------------------

    def _event(self, event_type: str, **fields: Any) -> None:
        self._emit(
            {
                "event_id": uuid.uuid4().hex,
                "event_type": event_type,
                "agent_id": self.agent_id,
                "agent_type": self.agent_type,
                "task_id": self.task_id,
                "correlation_id": self.correlation_id,
                "parent_agent_id": self.parent_agent_id,
                "parent_task_id": self.parent_task_id,
                "step_index": self.step_index,
                "emitted_at": now_us(),
                **fields,
            }
        )

    def step(self, action: str | None = None, *, context: str | None = None) -> None:
        """Mark the start of the next reasoning step (a kill boundary)."""
        self.check()
        self.step_index += 1
        context_hash = hashlib.sha256(context.encode()).hexdigest() if context is not None else None
        self._event("step_start", action=action, context_hash=context_hash)

    def tool_call(
        self,
        tool_name: str,
        args: Any = None,
        *,
        duration_ms: float | None = None,
        status: str = "ok",
    ) -> None:
        """Record that ``tool_name`` is invoked with ``args`` (a kill boundary)."""
        self.check()
        canonical = canonical_json(args)
        self._event(
            "tool_call",
            tool_name=tool_name,
            tool_stage="invoked",
            tool_args_hash=args_hash(args),
            tool_args=canonical if self._capture_tool_args else None,
            duration_ms=duration_ms,
            status=status,
            **{SKETCH_SOURCE: canonical},
        )

    def llm_call(
        self, *, prompt_tokens: int, completion_tokens: int, duration_ms: float | None = None
    ) -> None:
        """Record one model call and its token usage."""
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must not be negative")
        self._event(
            "llm_call",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            duration_ms=duration_ms,
        )

    # -- control --------------------------------------------------------------

    @property
    def killed(self) -> bool:
        return self.kill_command is not None

    def check(self) -> None:
        """Raise :class:`AgentKilled` if a KILL has arrived; acknowledges it once."""
        command = self.kill_command
        if command is not None:
            self._acknowledge(command)
            raise AgentKilled(command)

    def matches(self, command: Record) -> bool:
        """Whether ``command`` is addressed to this run."""
        target_type: str = command["target_type"]
        target_id: str = command["target_id"]
        return (
            target_type == "all"
            or (target_type == "agent" and target_id == self.agent_id)
            or (target_type == "task" and target_id == self.task_id)
            or (target_type == "chain" and target_id == self.correlation_id)
        )

    def apply(self, command: Record) -> None:
        """Called by the control listener's thread for a command addressed to this run."""
        if command["kind"] != "KILL":
            return  # PAUSE, RESUME and ROLLBACK arrive with the control plane
        with self._lock:
            if self.kill_command is not None:
                return  # idempotent: the first kill wins
            self.kill_command = command
            task, loop = self._task, self._task_loop
        if task is not None and loop is not None:
            loop.call_soon_threadsafe(self._cancel_bound_task, task, command)

    def _cancel_bound_task(self, task: asyncio.Task[Any], command: Record) -> None:
        if not task.done():
            task.cancel(f"killed by command {command['command_id']}")
        self._acknowledge(command)

    def _acknowledge(self, command: Record) -> None:
        with self._lock:
            if self._acked:
                return
            self._acked = True
        latency_ms = (time.time_ns() // 1000 - command["issued_at"]) / 1000.0
        self.kill_latency_ms = latency_ms
        self._event(
            "control_ack",
            status="killed",
            command_id=command["command_id"],
            control_latency_ms=latency_ms,
        )

    # -- lifecycle ------------------------------------------------------------

    def heartbeat(self, interval_s: float, *, stopped: bool = False) -> None:
        """Emitted by the monitor's heartbeat thread, never by agent code."""
        self._event(
            "heartbeat", heartbeat_interval_s=interval_s, status="stopped" if stopped else "ok"
        )

    def _start(self) -> None:
        # The promised heartbeat period travels with the start, so an executor that
        # dies before its first beat is still noticed.
        self._event("task_start", heartbeat_interval_s=self._heartbeat_interval_s)

    def _finish(self, exc: BaseException | None) -> None:
        if self.kill_command is not None:
            self._acknowledge(self.kill_command)
            status = "killed"
        elif exc is not None:
            status = "error"
        else:
            status = "ok"
        self._event("task_end", status=status)
        self._on_close(self)

    def __enter__(self) -> AgentRun:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc)

    async def __aenter__(self) -> AgentRun:
        with self._lock:
            self._task = asyncio.current_task()
            self._task_loop = asyncio.get_running_loop()
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._finish(exc)
        if self.kill_command is not None and isinstance(exc, asyncio.CancelledError):
            raise AgentKilled(self.kill_command) from exc
        return False
