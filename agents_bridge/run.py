"""One agent's run of one task: the handle agent code emits through and is stopped by."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from agents_bridge import propagation
from agents_bridge.actions import ActionRegistry, ActionSpec
from agents_bridge.actions import registry as default_registry
from agents_bridge.clock import now_us
from agents_bridge.codec import Record
from agents_bridge.emitter import SKETCH_SOURCE
from agents_bridge.event_frame import EventFrame, run_identity
from agents_bridge.pricing import PriceTable
from agents_bridge.rollback import JournaledAction
from agents_bridge.validation import InputGuard

__all__ = ["AgentKilled", "AgentRun", "RunSettings", "ToolCall"]


class AgentKilled(Exception):
    """Raised at the next step or tool boundary once a KILL (or a ROLLBACK) reached this run."""

    def __init__(self, command: Record) -> None:
        reason = command.get("reason") or "no reason"
        super().__init__(f"agent killed by command {command['command_id']}: {reason}")
        self.command = command


@dataclass(frozen=True)
class RunSettings:
    """What every run of one monitor shares."""

    emit: Callable[[EventFrame], None]
    on_close: Callable[[AgentRun], None]
    checkpoint: Callable[[AgentRun, Record], None]
    """Publishes a halted run's state for review."""
    guard: InputGuard
    prices: PriceTable
    producer_id: str
    sequence: itertools.count[int]
    capture_tool_args: bool = False
    capture_reasoning: bool = False
    capture_context: bool = False
    heartbeat_interval_s: float = 10.0
    registry: ActionRegistry = default_registry


class AgentRun:
    """Emits the events of one task and enforces the commands addressed to it.

    Use as a context manager (sync or async). :meth:`step`, :meth:`tool` and
    :meth:`tool_call` are kill boundaries: they raise :class:`AgentKilled` once a
    KILL has arrived. Inside ``async with``, the enclosing asyncio task is
    cancelled at once by a KILL. Sub-agents started inside the run (same
    thread or asyncio task, or a thread started via ``propagation.in_context``)
    join its correlation chain; :meth:`carrier` does the same across processes.
    """

    def __init__(
        self,
        shared: RunSettings,
        *,
        agent_id: str,
        agent_type: str | None,
        task_id: str,
        correlation_id: str,
        parent_agent_id: str | None,
        parent_task_id: str | None,
    ) -> None:
        plain = shared.guard.identifier  # the identity is marshalled: no str subclasses
        self.agent_id = plain("agent_id", agent_id)
        self.agent_type = plain("agent_type", agent_type)
        self.task_id = plain("task_id", task_id)
        self.correlation_id = plain("correlation_id", correlation_id)
        self.parent_agent_id = plain("parent_agent_id", parent_agent_id)
        self.parent_task_id = plain("parent_task_id", parent_task_id)
        self.step_index = 0
        self.last_action: str | None = None
        self._step_spend: list[float] = [0, 0, 0.0]  # prompt, completion tokens, USD
        self.kill_command: Record | None = None
        """The KILL or ROLLBACK that halted this run."""
        self.pause_command: Record | None = None
        self.kill_latency_ms: float | None = None
        """Command issued -> this run halted, once a KILL took effect."""
        self.actions: list[JournaledAction] = []
        """The action journal: every tool call, oldest first."""
        self.finished = threading.Event()
        self._shared = shared
        self._lock = threading.Lock()
        self._changed = threading.Condition(threading.Lock())
        """Guards the commands; notified when one arrives, so a paused run wakes up."""
        self._acked: set[tuple[str, str]] = set()
        self._halt_reported = False
        self._in_flight: ToolCall | None = None
        self._task: asyncio.Task[Any] | None = None
        self._task_loop: asyncio.AbstractEventLoop | None = None
        self._context_token: contextvars.Token[propagation.RunContext | None] | None = None
        self._identity = run_identity(
            agent_id=self.agent_id,
            agent_type=self.agent_type,
            task_id=self.task_id,
            correlation_id=self.correlation_id,
            parent_agent_id=self.parent_agent_id,
            parent_task_id=self.parent_task_id,
            producer_id=shared.producer_id,
        )

    @property
    def context(self) -> propagation.RunContext:
        return propagation.RunContext(self.agent_id, self.task_id, self.correlation_id)

    def carrier(self) -> dict[str, str]:
        """Headers that make a run in another process a child of this one."""
        return propagation.carrier(self.context)

    # -- events ---------------------------------------------------------------

    def _event(self, event_type: str, **fields: Any) -> None:
        self._shared.emit(
            (
                self._identity,
                next(self._shared.sequence),
                event_type,
                self.step_index,
                now_us(),
                fields,
            )
        )

    def step(
        self,
        action: str | None = None,
        *,
        context: str | None = None,
        input_summary: str | None = None,
        reasoning: str | None = None,
        confidence: float | None = None,
        branch: str | None = None,
        queue_depth: int | None = None,
    ) -> None:
        """Start the next reasoning step (a kill boundary).

        ``context`` (the context window) leaves the process only as its sha256,
        unless ``capture_context`` is on; ``reasoning`` only when
        ``capture_reasoning`` is on. Free text passes the redaction hook.
        """
        self.check()
        self.step_index += 1
        self.last_action = action
        self._step_spend = [0, 0, 0.0]
        guard = self._shared.guard
        self._event(
            "step_start",
            action=guard.text("action", action),
            context_hash=hashlib.sha256(context.encode()).hexdigest() if context else None,
            input_summary=guard.text(
                "input_summary", context if self._shared.capture_context else input_summary
            ),
            reasoning_excerpt=guard.text("reasoning", reasoning)
            if self._shared.capture_reasoning
            else None,
            confidence=confidence,
            branch=guard.text("branch", branch),
            queue_depth=guard.count("queue_depth", queue_depth)
            if queue_depth is not None
            else None,
        )

    def end_step(self, *, output_summary: str | None = None, status: str = "ok") -> None:
        """Close the current step with its outcome and the tokens and cost it used."""
        prompt, completion, cost = self._step_spend
        self._event(
            "step_end",
            output_summary=self._shared.guard.text("output_summary", output_summary),
            status=status,
            prompt_tokens=int(prompt),
            completion_tokens=int(completion),
            cost_usd=cost,
        )

    def tool(self, tool_name: str, args: Any = None) -> ToolCall:
        """A tool call recorded at all six stage boundaries (see :class:`ToolCall`)."""
        self.check()
        return ToolCall(self, tool_name, args)

    def tool_call(
        self,
        tool_name: str,
        args: Any = None,
        *,
        duration_ms: float | None = None,
        status: str = "ok",
        retry_count: int = 0,
        result: Any = None,
    ) -> None:
        """Record one whole tool call in a single event (a kill boundary).

        ``result`` is kept in this process for the tool's compensation on ROLLBACK.
        """
        self.check()
        fields = self._argument_fields(args)
        action = self.journal(
            self._shared.registry.spec(tool_name), args, fields.get("tool_args_hash")
        )
        action.result, action.status = result, status
        self._event(
            "tool_call",
            tool_name=tool_name,
            tool_stage=None,
            duration_ms=duration_ms,
            status=status,
            retry_count=self._shared.guard.count("retry_count", retry_count),
            **fields,
        )

    def _argument_fields(self, args: Any) -> dict[str, Any]:
        parsed = self._shared.guard.arguments(args)
        if parsed is None:
            return {}
        canonical, digest = parsed
        return {
            "tool_args_hash": digest,
            "tool_args": canonical if self._shared.capture_tool_args else None,
            SKETCH_SOURCE: canonical,
        }

    def llm_call(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        model: str | None = None,
        duration_ms: float | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Record one model call; its cost comes from the price table unless given."""
        guard = self._shared.guard
        prompt = guard.count("prompt_tokens", prompt_tokens)
        completion = guard.count("completion_tokens", completion_tokens)
        if cost_usd is None:
            cost_usd = self._shared.prices.cost(model, prompt, completion)
        self._step_spend[0] += prompt
        self._step_spend[1] += completion
        self._step_spend[2] += cost_usd or 0.0
        self._event(
            "llm_call",
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            duration_ms=duration_ms,
            cost_usd=cost_usd,
        )

    def error(self, exc: BaseException | str, *, tool_name: str | None = None) -> None:
        """Record an error the agent surfaced (and so did not swallow)."""
        message = str(exc)
        self._event(
            "error",
            status="error",
            tool_name=tool_name,
            error_type=type(exc).__name__ if isinstance(exc, BaseException) else "error",
            error_message=self._shared.guard.text("error_message", message),
        )

    def heartbeat(self, interval_s: float, *, stopped: bool = False) -> None:
        """Emitted by the monitor's heartbeat thread, never by agent code."""
        self._event(
            "heartbeat", heartbeat_interval_s=interval_s, status="stopped" if stopped else "ok"
        )

    # -- control --------------------------------------------------------------

    @property
    def killed(self) -> bool:
        return self.kill_command is not None

    @property
    def paused(self) -> bool:
        return self.pause_command is not None

    def check(self) -> None:
        """A step or tool boundary: raise :class:`AgentKilled` once halted; wait while paused.

        Waiting blocks the calling thread; asyncio code that must not block its
        event loop awaits :meth:`checkpoint` at its boundaries instead.
        """
        if self.pause_command is not None:  # unlocked read: a PAUSE landing now holds next time
            with self._changed:
                while self.pause_command is not None and self.kill_command is None:
                    self._acknowledge(self.pause_command, "paused")
                    self._changed.wait()
        self._raise_if_halted()

    async def checkpoint(self) -> None:
        """:meth:`check` for asyncio code: waits for RESUME without blocking the loop."""
        if self.pause_command is not None and self.kill_command is None:
            await asyncio.get_running_loop().run_in_executor(None, self.check)
        self._raise_if_halted()

    def _raise_if_halted(self) -> None:
        command = self.kill_command
        if command is not None:
            self._halted(command)
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
        """Called by the control listener's thread for a command addressed to this run.

        KILL and ROLLBACK halt the run (ROLLBACK's compensations run once it has
        stopped); PAUSE takes effect at the next boundary; RESUME lifts it.
        """
        kind = command["kind"]
        with self._changed:
            if self.kill_command is not None or self.finished.is_set():
                return  # the first halt wins; a finished run has nothing to stop
            if kind == "PAUSE":
                self.pause_command = command
                return
            if kind == "RESUME":
                paused, self.pause_command = self.pause_command, None
                self._changed.notify_all()
                if paused is not None:
                    self._acknowledge(command, "resumed")
                return
            self.kill_command = command
            self._changed.notify_all()
            task, loop = self._task, self._task_loop
            # A call in flight that must not be torn finishes first (registry: on_kill).
            defer = self._in_flight is not None and self._in_flight.spec.on_kill == "finish"
        if task is not None and loop is not None and not defer:
            loop.call_soon_threadsafe(self._cancel_bound_task, task, command)

    def _tool_finished(self) -> None:
        with self._changed:
            self._in_flight = None
            command, task, loop = self.kill_command, self._task, self._task_loop
        if command is not None and task is not None and loop is not None:
            loop.call_soon_threadsafe(self._cancel_bound_task, task, command)

    def _cancel_bound_task(self, task: asyncio.Task[Any], command: Record) -> None:
        if not task.done():
            task.cancel(f"halted by command {command['command_id']}")
        self._halted(command)

    def _halted(self, command: Record) -> None:
        """Once per run: checkpoint the task for review, then acknowledge the halt."""
        with self._lock:
            if self._halt_reported:
                return
            self._halt_reported = True
        self._shared.checkpoint(self, command)
        self._acknowledge(command, "killed" if command["kind"] == "KILL" else "halted")

    def _acknowledge(self, command: Record, status: str) -> None:
        with self._lock:
            if (command["command_id"], status) in self._acked:
                return
            self._acked.add((command["command_id"], status))
        latency_ms = (time.time_ns() // 1000 - command["issued_at"]) / 1000.0
        if command["kind"] == "KILL":
            self.kill_latency_ms = latency_ms
        self._event(
            "control_ack",
            action=command["kind"],
            status=status,
            command_id=command["command_id"],
            control_latency_ms=latency_ms,
        )

    def reject(self, command: Record, reason: str) -> None:
        """Report a command addressed to this run that was refused (forged, expired...)."""
        self._event(
            "command_rejected",
            action=command.get("kind"),
            status=reason,
            command_id=command.get("command_id"),
        )

    def journal(self, spec: ActionSpec, args: Any, args_hash: str | None) -> JournaledAction:
        """Record a tool call for checkpoints and rollback (in this process only)."""
        action = JournaledAction(spec, args, self.step_index, args_hash)
        with self._lock:
            self.actions.append(action)
        return action

    # -- lifecycle ------------------------------------------------------------

    def _start(self) -> None:
        self._context_token = propagation.enter(self.context)
        # The promised heartbeat period travels with the start, so an executor that
        # dies before its first beat is still noticed.
        self._event("task_start", heartbeat_interval_s=self._shared.heartbeat_interval_s)

    def _finish(self, exc: BaseException | None) -> None:
        if self._context_token is not None:
            propagation.leave(self._context_token)
            self._context_token = None
        if self.kill_command is not None:
            self._halted(self.kill_command)
            status = "killed"
        elif exc is not None:
            status = "error"
        else:
            status = "ok"
        self._event(
            "task_end", status=status, error_type=type(exc).__name__ if exc is not None else None
        )
        self.finished.set()
        self._shared.on_close(self)

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


class ToolCall:
    """One tool call, recorded at each of its six stage boundaries with its own timestamp.

    ``run.tool(name, args)`` records *selected*; then call, in order,
    :meth:`params_extracted`, :meth:`invoked`, :meth:`response_received`,
    :meth:`response_parsed` and :meth:`reasoning_reentered`. As a context manager
    it records the first three on entry and the rest on exit; an exception in
    the block is recorded as a failed response.
    """

    def __init__(self, run: AgentRun, tool_name: str, args: Any) -> None:
        self._run = run
        self.tool_name = tool_name
        self._args = args
        self._invoked_at: float | None = None
        self._stages: set[str] = set()
        self._argument_fields: dict[str, Any] | None = None
        self.spec = run._shared.registry.spec(tool_name)
        self._action: JournaledAction | None = None
        self._stage("selected")

    def _stage(self, stage: str, **fields: Any) -> None:
        self._stages.add(stage)
        self._run._event("tool_call", tool_name=self.tool_name, tool_stage=stage, **fields)

    def _fields(self) -> dict[str, Any]:
        # Canonical form, hash and sketch source of the arguments, computed once per call.
        if self._argument_fields is None:
            self._argument_fields = self._run._argument_fields(self._args)
        return self._argument_fields

    def params_extracted(self, args: Any = None) -> None:
        if args is not None:
            self._args, self._argument_fields = args, None
        self._stage("params_extracted", **self._fields())

    def invoked(self, *, retry_count: int = 0) -> None:
        """The function is called now (a kill boundary: a killed run never invokes)."""
        run = self._run
        run.check()
        fields = self._fields()
        with run._changed:
            run._in_flight = self
        if self._action is None:  # a retry is the same journaled action
            self._action = run.journal(self.spec, self._args, fields.get("tool_args_hash"))
        self._invoked_at = time.perf_counter()
        self._stage(
            "invoked",
            retry_count=run._shared.guard.count("retry_count", retry_count),
            **fields,
        )

    def response_received(
        self,
        *,
        status: str = "ok",
        output_summary: str | None = None,
        error: BaseException | None = None,
        result: Any = None,
    ) -> None:
        """The call returned; ``result`` stays in this process for a compensation."""
        if self._action is not None:
            self._action.result = result
            self._action.status = "error" if error is not None or status != "ok" else "ok"
        if self._run._in_flight is self:
            self._run._tool_finished()
        duration = (time.perf_counter() - self._invoked_at) * 1000 if self._invoked_at else None
        self._stage(
            "response_received",
            duration_ms=duration,
            status="error" if error is not None else status,
            error_type=type(error).__name__ if error is not None else None,
            output_summary=self._run._shared.guard.text("output_summary", output_summary),
        )

    def response_parsed(self, *, ok: bool = True, error: BaseException | str | None = None) -> None:
        """Record the parse of the response; ``ok=False`` is a parse failure."""
        failed = not ok or error is not None
        self._stage(
            "response_parsed",
            status="error" if failed else "ok",
            error_type=type(error).__name__ if isinstance(error, BaseException) else None,
            error_message=str(error) if error is not None else None,
        )

    def reasoning_reentered(self) -> None:
        self._stage("reasoning_reentered")

    def __enter__(self) -> ToolCall:
        self.params_extracted()
        self.invoked()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if "response_received" not in self._stages:
            self.response_received(error=exc if isinstance(exc, Exception) else None)
        if "response_parsed" not in self._stages and exc is None:
            self.response_parsed()
        if "reasoning_reentered" not in self._stages:
            self.reasoning_reentered()
