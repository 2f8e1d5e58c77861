"""OpenAI Agents SDK: a tracing processor that records runs, and hooks that stop them.

One line, for a run that is recorded and can be killed, paused and rolled back::

    result = await run_agent(monitor, agent, "Where is my refund?", agent_id="support-bot")

``run_agent`` opens the task with ``async with monitor.run(...)`` (so a KILL
cancels the awaiting run at once and :class:`~agents_bridge.AgentKilled` comes
out), installs a :class:`TrcTracingProcessor` for the monitor once, and passes
:class:`TrcRunHooks` so every agent start, model call, tool call and handoff is
also a kill and pause boundary. Without ``run_agent``, adding the processor
(``add_trace_processor(TrcTracingProcessor(monitor, "support-bot"))``) records
every SDK trace as one task; kills then need the hooks (``hooks=TrcRunHooks(p)``),
since the SDK logs and swallows a tracing processor's exceptions.

Mapping of the SDK's spans:

* the trace: one task (the first agent's run); ``agent`` spans of other agents
  (handoff targets, agents used as tools) are **sub-agents** with parent links
  in the same correlation chain;
* ``generation`` / ``response``: a **step** per model call and an **LLM call** with
  the model's token usage;
* ``function``: a **tool call** at the six stages (reasoning re-entered when the
  next model call starts), errors as failed responses;
* ``handoff``: a whole ``handoff`` tool call naming both agents, so handoff
  ping-pong is caught by the loop detector;
* ``guardrail``: a whole ``guardrail.<name>`` call, status ``error`` when tripped;
* a span error: an error event.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agents_bridge.integrations._support import (
    OwnedRun,
    RunFactory,
    agent_id_from,
    json_arguments,
    missing_extra,
    summarize,
)
from agents_bridge.run import AgentRun, ToolCall

try:
    from agents import Agent, RunHooks, Runner, RunResult, Tool, add_trace_processor
    from agents.items import ModelResponse
    from agents.run_context import AgentHookContext, RunContextWrapper
    from agents.tracing import (
        Span,
        Trace,
        TracingProcessor,
        get_current_span,
        get_current_trace,
    )
    from agents.tracing.span_data import (
        AgentSpanData,
        FunctionSpanData,
        GenerationSpanData,
        GuardrailSpanData,
        HandoffSpanData,
        ResponseSpanData,
    )
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise missing_extra("openai_agents", "openai-agents", exc) from exc

__all__ = ["TrcRunHooks", "TrcTracingProcessor", "processor_for", "run_agent"]

_log = logging.getLogger(__name__)

_bound: contextvars.ContextVar[tuple[TrcTracingProcessor, AgentRun] | None] = (
    contextvars.ContextVar("trc_openai_agents_run", default=None)
)
"""The processor and run of a :func:`run_agent` call in progress."""


@dataclass
class _Agent:
    run: AgentRun
    owned: OwnedRun | None
    name: str | None
    """The SDK agent's name (None until the first agent span names the root)."""
    step_open: bool = False
    step_failed: bool = False
    reentry: list[ToolCall] = field(default_factory=list)


@dataclass
class _Trace:
    bound: AgentRun | None
    name: str
    root: _Agent | None = None
    agents: list[_Agent] = field(default_factory=list)
    span_agent: dict[str, _Agent] = field(default_factory=dict)
    """span id -> the agent the span belongs to."""
    calls: dict[str, ToolCall] = field(default_factory=dict)
    invoked: set[str] = field(default_factory=set)
    """Function spans whose call reached the invoked stage."""
    started: dict[str, float] = field(default_factory=dict)
    handed_to: dict[str, _Agent] = field(default_factory=dict)
    """Agent name -> the agent that handed off to it (its parent)."""


_RECORDED = (
    GenerationSpanData,
    ResponseSpanData,
    FunctionSpanData,
    HandoffSpanData,
    GuardrailSpanData,
)


class TrcTracingProcessor(TracingProcessor):
    """Turns the Agents SDK's traces and spans into agent events.

    ``agent_id`` names the task's agent (default: the first agent's name);
    sub-agents are named after their SDK agent names.
    """

    def __init__(
        self, monitor: RunFactory, agent_id: str | None = None, *, agent_type: str | None = None
    ) -> None:
        self._monitor = monitor
        self.agent_id = agent_id
        self.agent_type = agent_type
        self._traces: dict[str, _Trace] = {}
        self._lock = threading.Lock()

    def traces(self, trace_id: str) -> bool:
        """Whether this processor records the trace (it is registered with the SDK)."""
        with self._lock:
            return trace_id in self._traces

    def agent_run(self, trace_id: str, agent_name: str | None = None) -> AgentRun | None:
        """The run recording ``agent_name`` (or the task's root) in a trace, if any."""
        with self._lock:
            trace = self._traces.get(trace_id)
        if trace is None:
            return None
        for agent in reversed(trace.agents):
            if agent_name is None or agent.name == agent_name:
                return agent.run
        return trace.root.run if trace.root else trace.bound

    # -- traces ------------------------------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        bound = _bound.get()
        if bound is not None and bound[0] is not self:
            return  # run_agent of another monitor's processor: that one records it
        with self._lock:
            self._traces[trace.trace_id] = _Trace(bound[1] if bound else None, trace.name)

    def on_trace_end(self, trace: Trace) -> None:
        with self._lock:
            state = self._traces.pop(trace.trace_id, None)
        if state is None:
            return
        for agent in reversed(state.agents):
            self._close(agent, None)

    # -- spans -------------------------------------------------------------------

    def on_span_start(self, span: Span[Any]) -> None:
        trace = self._trace(span)
        if trace is None:
            return
        data = span.span_data
        agent = self._owner(trace, span)
        if isinstance(data, AgentSpanData):
            agent = self._agent_started(trace, data.name, agent)
        elif agent is None:
            agent = trace.root or (self._root(trace, None) if isinstance(data, _RECORDED) else None)
        if agent is None:
            return  # a span outside any agent that we do not record (e.g. a task span)
        trace.span_agent[span.span_id] = agent
        trace.started[span.span_id] = time.perf_counter()
        if agent.run.killed:
            return  # the hooks raise; nothing more is recorded
        if isinstance(data, GenerationSpanData | ResponseSpanData):
            self._reenter(agent)
            self._end_step(agent)
            model = data.model if isinstance(data, GenerationSpanData) else None
            agent.run.step(model or f"{agent.name} model call")
            agent.step_open = True
        elif isinstance(data, FunctionSpanData):
            # The SDK sets the arguments after the span starts: the other stages follow
            # in the tool-start hook (a kill boundary) or, without hooks, at the end.
            trace.calls[span.span_id] = agent.run.tool(data.name)

    def on_span_end(self, span: Span[Any]) -> None:
        trace = self._trace(span)
        if trace is None:
            return
        agent = trace.span_agent.pop(span.span_id, None)
        started = trace.started.pop(span.span_id, None)
        if agent is None:
            return
        data = span.span_data
        error = span.error
        duration = (time.perf_counter() - started) * 1000 if started is not None else None
        if isinstance(data, GenerationSpanData | ResponseSpanData):
            prompt, completion, model = _usage(data)
            agent.run.llm_call(
                model=model, prompt_tokens=prompt, completion_tokens=completion,
                duration_ms=duration,
            )  # fmt: skip
        elif isinstance(data, FunctionSpanData):
            call = trace.calls.pop(span.span_id, None)
            was_invoked = span.span_id in trace.invoked
            trace.invoked.discard(span.span_id)
            if call is not None and not agent.run.killed:
                if not was_invoked:  # no hooks: the arguments are known now
                    call.params_extracted(json_arguments(data.input or None))
                    call.invoked()
                if error is not None:
                    call.response_received(status="error", output_summary=error["message"])
                else:
                    call.response_received(
                        output_summary=summarize(data.output), result=data.output
                    )
                    call.response_parsed()
                agent.reentry.append(call)
        elif isinstance(data, HandoffSpanData) and not agent.run.killed:
            agent.run.tool_call(
                "handoff",
                {"from": data.from_agent, "to": data.to_agent},
                duration_ms=duration,
                status="error" if error else "ok",
            )
            if data.to_agent:
                trace.handed_to[data.to_agent] = agent
        elif isinstance(data, GuardrailSpanData) and not agent.run.killed:
            agent.run.tool_call(
                f"guardrail.{data.name}",
                duration_ms=duration,
                status="error" if data.triggered else "ok",
            )
        if error is not None and not isinstance(data, FunctionSpanData) and not agent.run.killed:
            agent.step_failed = True
            agent.run.error(error["message"])
        if isinstance(data, AgentSpanData) and agent is not trace.root:
            self._close(agent, error["message"] if error else None)

    def tool_invoked(self, span: Span[Any], arguments: Any) -> None:
        """The function span's tool is about to run with ``arguments`` (a kill boundary)."""
        trace = self._trace(span)
        call = trace.calls.get(span.span_id) if trace is not None else None
        if trace is None or call is None or span.span_id in trace.invoked:
            return
        trace.invoked.add(span.span_id)
        call.params_extracted(arguments)
        call.invoked()  # raises AgentKilled for a killed run

    def shutdown(self) -> None:
        with self._lock:
            traces = list(self._traces.values())
            self._traces.clear()
        for trace in traces:
            for agent in reversed(trace.agents):
                self._close(agent, None)

    def force_flush(self) -> None:
        return None

    # -- helpers -------------------------------------------------------------------

    def _trace(self, span: Span[Any]) -> _Trace | None:
        with self._lock:
            return self._traces.get(span.trace_id)

    def _owner(self, trace: _Trace, span: Span[Any]) -> _Agent | None:
        parent = span.parent_id
        return trace.span_agent.get(parent) if parent else None

    def _root(self, trace: _Trace, name: str | None) -> _Agent:
        if trace.root is None:
            if trace.bound is not None:
                trace.root = _Agent(trace.bound, None, name)
            else:
                owned = OwnedRun(
                    self._monitor,
                    self.agent_id or agent_id_from(name or trace.name),
                    agent_type=self.agent_type,
                    isolated=True,
                )
                trace.root = _Agent(owned.run, owned, name)
            trace.agents.append(trace.root)
        return trace.root

    def _agent_started(self, trace: _Trace, name: str, enclosing: _Agent | None) -> _Agent:
        """The agent an agent span belongs to: the root's, or a new sub-agent's."""
        if trace.root is None:
            return self._root(trace, name)
        if trace.root.name is None:  # spans before the first agent span opened the root
            trace.root.name = name
            return trace.root
        if enclosing is not None and enclosing.name == name:
            return enclosing
        if enclosing is None and trace.root.name == name:
            return trace.root
        parent = enclosing or trace.handed_to.pop(name, None) or trace.root
        owned = OwnedRun(
            self._monitor,
            agent_id_from(name),
            agent_type=self.agent_type,
            parent=parent.run,
        )
        agent = _Agent(owned.run, owned, name)
        trace.agents.append(agent)
        return agent

    def _reenter(self, agent: _Agent) -> None:
        for call in agent.reentry:
            call.reasoning_reentered()
        agent.reentry.clear()

    def _end_step(self, agent: _Agent) -> None:
        if agent.step_open:
            agent.step_open = False
            agent.run.end_step(status="error" if agent.step_failed else "ok")
            agent.step_failed = False

    def _close(self, agent: _Agent, error: str | None) -> None:
        self._reenter(agent)
        self._end_step(agent)
        if agent.owned is not None:
            agent.owned.finish(_AgentFailed(error) if error else None)


class TrcRunHooks(RunHooks[Any]):
    """Kill and pause boundaries for a run: agent start, model call, tool call, handoff.

    Raises :class:`~agents_bridge.AgentKilled` out of ``Runner.run``; a PAUSE waits
    here without blocking the event loop.
    """

    def __init__(self, processor: TrcTracingProcessor) -> None:
        self._processor = processor

    async def _boundary(self, agent_name: str | None) -> None:
        bound = _bound.get()
        run = bound[1] if bound else None
        trace = get_current_trace()
        if trace is not None:
            run = self._processor.agent_run(trace.trace_id, agent_name) or run
        if run is not None:
            await run.checkpoint()

    async def on_agent_start(self, context: AgentHookContext[Any], agent: Agent[Any]) -> None:
        trace = get_current_trace()
        if trace is not None and not self._processor.traces(trace.trace_id):
            _warn_unregistered()
        await self._boundary(agent.name)

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[Any],
    ) -> None:
        await self._boundary(agent.name)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        await self._boundary(agent.name)

    async def on_tool_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool
    ) -> None:
        await self._boundary(agent.name)
        span = get_current_span()
        if span is not None and isinstance(span.span_data, FunctionSpanData):
            raw = getattr(context, "tool_arguments", None) or span.span_data.input
            self._processor.tool_invoked(span, json_arguments(raw or None))

    async def on_handoff(
        self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]
    ) -> None:
        await self._boundary(from_agent.name)


_processors: dict[int, TrcTracingProcessor] = {}
_processors_lock = threading.Lock()


def processor_for(monitor: RunFactory) -> TrcTracingProcessor:
    """The processor recording for ``monitor``, added to the SDK's tracing once."""
    with _processors_lock:
        processor = _processors.get(id(monitor))
        if processor is None:
            processor = _processors[id(monitor)] = TrcTracingProcessor(monitor)
            add_trace_processor(processor)
        return processor


async def run_agent(
    monitor: RunFactory,
    agent: Agent[Any],
    input: Any,
    *,
    agent_id: str | None = None,
    agent_type: str | None = None,
    **runner_kwargs: Any,
) -> RunResult:
    """``Runner.run(agent, input)`` as one monitored task of ``agent_id``; killable.

    ``runner_kwargs`` go to ``Runner.run`` (``hooks`` are chained after ours).
    """
    processor = processor_for(monitor)
    hooks = TrcRunHooks(processor)
    if "hooks" in runner_kwargs:
        hooks = _ChainedHooks(processor, runner_kwargs.pop("hooks"))
    async with monitor.run(agent_id or agent_id_from(agent.name), agent_type=agent_type) as run:
        token = _bound.set((processor, run))
        try:
            result = await Runner.run(agent, input, hooks=hooks, **runner_kwargs)
        finally:
            _bound.reset(token)
    return result


class _ChainedHooks(TrcRunHooks):
    """Our boundaries first, then the caller's own hooks."""

    def __init__(self, processor: TrcTracingProcessor, inner: RunHooks[Any]) -> None:
        super().__init__(processor)
        self._inner = inner

    async def on_agent_start(self, context: AgentHookContext[Any], agent: Agent[Any]) -> None:
        await super().on_agent_start(context, agent)
        await self._inner.on_agent_start(context, agent)

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[Any],
    ) -> None:
        await super().on_llm_start(context, agent, system_prompt, input_items)
        await self._inner.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        await super().on_llm_end(context, agent, response)
        await self._inner.on_llm_end(context, agent, response)

    async def on_tool_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool
    ) -> None:
        await super().on_tool_start(context, agent, tool)
        await self._inner.on_tool_start(context, agent, tool)

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: Any
    ) -> None:
        await self._inner.on_tool_end(context, agent, tool, result)

    async def on_handoff(
        self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]
    ) -> None:
        await super().on_handoff(context, from_agent, to_agent)
        await self._inner.on_handoff(context, from_agent, to_agent)

    async def on_agent_end(
        self, context: AgentHookContext[Any], agent: Agent[Any], output: Any
    ) -> None:
        await self._inner.on_agent_end(context, agent, output)


@functools.cache
def _warn_unregistered() -> None:
    _log.warning(
        "the TrcTracingProcessor is not among the Agents SDK's trace processors "
        "(did set_trace_processors replace it?): runs are not recorded; "
        "add_trace_processor(processor_for(monitor)) puts it back"
    )


class _AgentFailed(Exception):
    """The task_end's error for a sub-agent whose span failed."""


def _usage(data: GenerationSpanData | ResponseSpanData) -> tuple[int, int, str | None]:
    if isinstance(data, GenerationSpanData):
        usage = data.usage or {}
        model = data.model
    else:
        response = data.response
        usage = data.usage or {}
        model = response.model if response is not None else None
        if not usage and response is not None and response.usage is not None:
            usage = {
                "input_tokens": response.usage.input_tokens,
                "output_tokens": response.usage.output_tokens,
            }
    prompt = int(usage.get("input_tokens") or usage.get("prompt_tokens") or 0)
    completion = int(usage.get("output_tokens") or usage.get("completion_tokens") or 0)
    return prompt, completion, model
