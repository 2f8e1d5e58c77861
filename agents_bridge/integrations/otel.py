"""OpenTelemetry: a span processor that turns GenAI spans into agent events.

Agents already instrumented with an OpenTelemetry-based library (spans that
follow the GenAI semantic conventions) are monitored with no code change
beyond registering the processor::

    provider.add_span_processor(TrcSpanProcessor(monitor, agent_id="support-bot"))

Mapping (``gen_ai.operation.name`` decides):

* ``invoke_agent`` / ``create_agent`` span: one agent run (task) for the span's
  duration, named by ``gen_ai.agent.name`` (or ``agent_id``); an agent span inside
  another one is its sub-agent (same correlation chain, parent links). GenAI
  spans outside any agent span belong to one run per trace, closed when the
  trace's local root span ends.
* ``chat`` / ``text_completion`` / ``generate_content``: a step per model call,
  with an LLM call carrying ``gen_ai.usage.input_tokens``/``output_tokens``
  (or the older ``prompt_tokens``/``completion_tokens``) and the model name.
* ``execute_tool``: a tool call at the six stages (``gen_ai.tool.name``,
  arguments from ``gen_ai.tool.call.arguments``); reasoning re-entered is
  recorded when the next model call starts.
* ``embeddings``: an LLM call (tokens) without a step.
* a span with status ERROR: an error event (``error.type`` and the description).

Kill (and pause, through :meth:`AgentRun.check`) is honoured when the monitor's
control listener runs in this process: with ``halt_on_start`` (the default),
starting a model, tool or agent span of a killed run raises
:class:`~agents_bridge.AgentKilled` out of the instrumented library's
``start_span``, so the agent stops at its next GenAI operation.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
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
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
    from opentelemetry.trace import StatusCode
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise missing_extra("otel", "otel", exc) from exc

__all__ = ["TrcSpanProcessor"]

OPERATION = "gen_ai.operation.name"
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent"})
MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
TOOL_OPERATION = "execute_tool"
EMBEDDINGS = "embeddings"
ARGUMENTS = "gen_ai.tool.call.arguments"
GENAI_OPERATIONS = MODEL_OPERATIONS | {TOOL_OPERATION, EMBEDDINGS}


@dataclass
class _Agent:
    run: AgentRun
    owned: OwnedRun
    step_open: bool = False
    step_failed: bool = False
    reentry: list[ToolCall] = field(default_factory=list)


@dataclass
class _Open:
    """A started span we track: its agent (if any) and what it opened."""

    agent: _Agent | None
    owns_agent: bool = False
    call: ToolCall | None = None
    trace_root: bool = False
    invoked: bool = False


class TrcSpanProcessor(SpanProcessor):
    """Feeds GenAI spans to the monitor as agent events (register on a ``TracerProvider``).

    ``agent_id`` names the agent of runs not named by ``gen_ai.agent.name``
    (and overrides it for the outermost agent when ``name_from_spans`` is off).
    """

    def __init__(
        self,
        monitor: RunFactory,
        agent_id: str = "otel-agent",
        *,
        agent_type: str | None = None,
        name_from_spans: bool = True,
        halt_on_start: bool = True,
    ) -> None:
        self._monitor = monitor
        self.agent_id = agent_id
        self.agent_type = agent_type
        self.name_from_spans = name_from_spans
        self.halt_on_start = halt_on_start
        self._spans: dict[int, _Open] = {}
        self._trace_runs: dict[int, _Agent] = {}
        self._lock = threading.Lock()

    # -- span lifecycle --------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes: Mapping[str, Any] = span.attributes or {}
        operation = attributes.get(OPERATION)
        context = span.get_span_context()
        parent = span.parent
        local_parent = parent is not None and not parent.is_remote
        with self._lock:
            enclosing = self._spans.get(parent.span_id) if local_parent and parent else None
            inherited = enclosing.agent if enclosing else None
            if inherited is None:
                inherited = self._trace_runs.get(context.trace_id)
        opened = _Open(inherited, trace_root=not local_parent)
        if operation in AGENT_OPERATIONS:
            name = attributes.get("gen_ai.agent.name")
            agent_id = agent_id_from(str(name)) if name and self.name_from_spans else self.agent_id
            owned = OwnedRun(
                self._monitor,
                agent_id,
                agent_type=self.agent_type,
                parent=inherited.run if inherited else None,
                isolated=True,
            )
            opened.agent, opened.owns_agent = _Agent(owned.run, owned), True
        elif opened.agent is None and operation in GENAI_OPERATIONS:
            owned = OwnedRun(
                self._monitor, self.agent_id, agent_type=self.agent_type, isolated=True
            )
            opened.agent = _Agent(owned.run, owned)
            with self._lock:
                self._trace_runs[context.trace_id] = opened.agent
                # A GenAI span that is itself the local root closes its run.
                opened.owns_agent = opened.trace_root
        agent = opened.agent
        if agent is not None and operation is not None and self.halt_on_start:
            agent.run.check()  # a killed run's span never starts (nor is tracked)
        with self._lock:
            self._spans[context.span_id] = opened
        if agent is None or operation is None or agent.run.killed:
            return  # a killed run records nothing more (its boundaries would raise)
        if operation in MODEL_OPERATIONS:
            self._reenter(agent)
            if agent.step_open:
                self._end_step(agent)
            agent.run.step(str(attributes.get("gen_ai.request.model") or span.name))
            agent.step_open = True
        elif operation == TOOL_OPERATION and attributes.get("gen_ai.tool.name"):
            self._tool_start(agent, attributes, opened)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        if context is None:
            return
        with self._lock:
            opened = self._spans.pop(context.span_id, None)
        if opened is None:
            return
        agent = opened.agent
        attributes: Mapping[str, Any] = span.attributes or {}
        operation = attributes.get(OPERATION)
        failed = span.status.status_code is StatusCode.ERROR
        if agent is not None and operation is not None:
            if operation in MODEL_OPERATIONS or operation == EMBEDDINGS:
                agent.run.llm_call(
                    model=_model(attributes),
                    prompt_tokens=_int(attributes, "input_tokens", "prompt_tokens"),
                    completion_tokens=_int(attributes, "output_tokens", "completion_tokens"),
                    duration_ms=_duration_ms(span),
                )
            elif operation == TOOL_OPERATION and not agent.run.killed:
                if opened.call is None:  # named only now
                    opened.call = ToolCall(agent.run, str(attributes.get("gen_ai.tool.name")), None)
                self._invoke(opened, attributes)  # unless done at the start
                call = opened.call
                result = attributes.get("gen_ai.tool.call.result")
                if failed:
                    call.response_received(status="error", output_summary=_error_text(span))
                else:
                    call.response_received(output_summary=summarize(result), result=result)
                    call.response_parsed()
                agent.reentry.append(call)
            if failed and not agent.run.killed:
                agent.step_failed = True
                agent.run.error(_error_text(span), tool_name=attributes.get("gen_ai.tool.name"))
        if opened.owns_agent and agent is not None:
            self._close(agent, context.trace_id, failed)
        elif opened.trace_root:
            with self._lock:
                trace_agent = self._trace_runs.get(context.trace_id)
            if trace_agent is not None:
                self._close(trace_agent, context.trace_id, failed)

    def shutdown(self) -> None:
        """Close every run still open (their task_end says ``ok``)."""
        with self._lock:
            agents = {id(o.agent): o.agent for o in self._spans.values() if o.agent}
            agents.update({id(a): a for a in self._trace_runs.values()})
            self._spans.clear()
            self._trace_runs.clear()
        for agent in agents.values():
            self._reenter(agent)
            self._end_step(agent)
            agent.owned.finish()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- helpers ---------------------------------------------------------------

    def _tool_start(self, agent: _Agent, attributes: Mapping[str, Any], opened: _Open) -> None:
        """Selected; then extracted and invoked if the arguments are known already."""
        opened.call = agent.run.tool(str(attributes.get("gen_ai.tool.name") or "tool"))
        if ARGUMENTS in attributes:
            self._invoke(opened, attributes)

    def _invoke(self, opened: _Open, attributes: Mapping[str, Any]) -> None:
        if opened.call is not None and not opened.invoked:
            opened.invoked = True
            opened.call.params_extracted(json_arguments(attributes.get(ARGUMENTS)))
            opened.call.invoked()

    def _reenter(self, agent: _Agent) -> None:
        for call in agent.reentry:
            call.reasoning_reentered()
        agent.reentry.clear()

    def _end_step(self, agent: _Agent) -> None:
        if agent.step_open:
            agent.step_open = False
            agent.run.end_step(status="error" if agent.step_failed else "ok")
            agent.step_failed = False

    def _close(self, agent: _Agent, trace_id: int, failed: bool) -> None:
        with self._lock:
            if self._trace_runs.get(trace_id) is agent:
                del self._trace_runs[trace_id]
        self._reenter(agent)
        self._end_step(agent)
        agent.owned.finish(
            _SpanFailed("the agent span ended with status ERROR") if failed else None
        )


class _SpanFailed(Exception):
    """The task_end's error for a run whose span failed."""


def _model(attributes: Mapping[str, Any]) -> str | None:
    model = attributes.get("gen_ai.response.model") or attributes.get("gen_ai.request.model")
    return str(model) if model else None


def _int(attributes: Mapping[str, Any], current: str, legacy: str) -> int:
    value = attributes.get(f"gen_ai.usage.{current}", attributes.get(f"gen_ai.usage.{legacy}"))
    return int(value) if isinstance(value, int | float) else 0


def _duration_ms(span: ReadableSpan) -> float | None:
    if span.start_time is None or span.end_time is None:
        return None
    return (span.end_time - span.start_time) / 1e6


def _error_text(span: ReadableSpan) -> str:
    kind = (span.attributes or {}).get("error.type")
    description = span.status.description or "span status ERROR"
    return f"{kind}: {description}" if kind else description
