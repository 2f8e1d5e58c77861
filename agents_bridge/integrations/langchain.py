"""LangChain and LangGraph: a callback handler that records every run and obeys kills.

One line::

    graph = instrument(graph, monitor, "support-bot")  # or any LangChain Runnable
    graph.invoke({"messages": [...]})                  # raises AgentKilled once killed

Each top-level invocation becomes one task of the agent (its task id is the
LangChain root run id), so concurrent invocations are separate tasks. Pass an
open :class:`~agents_bridge.AgentRun` instead of a monitor to record into a run
you manage yourself (``async with monitor.run(...)`` also cancels an awaiting
``ainvoke`` at once on a KILL).

What is recorded:

* a **step** per chat-model or LLM call (the model reasoning once, plus the
  tools it chose), ended with the step's tokens when the next one starts or the
  invocation ends; with ``steps="node"``, a step per LangGraph node instead;
* an **LLM call** per model call, with token usage and the model name;
* **tool calls** and **retrievers** at the six stages (selected, parameters
  extracted, invoked, response received, response parsed, and reasoning
  re-entered when the model is called again);
* **errors** the invocation raised (once per exception, kills excluded);
* **sub-agents**: chains or graph nodes named in ``subagents`` run as child runs
  in the same correlation chain with parent links; an instrumented graph
  invoked inside another one joins the outer chain the same way.

Kill, pause and rollback: the handler has ``raise_error = True`` and calls
:meth:`AgentRun.check` at every chain, node, model, tool and retriever start, so
:class:`~agents_bridge.AgentKilled` comes out of ``invoke``/``ainvoke``.
:func:`register_tools` puts tools in the action registry that rollback uses.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from uuid import UUID

from agents_bridge.actions import ActionKind, ActionRegistry, Compensation
from agents_bridge.actions import registry as default_registry
from agents_bridge.integrations._support import (
    OwnedRun,
    RunFactory,
    agent_id_from,
    missing_extra,
    summarize,
)
from agents_bridge.run import AgentKilled, AgentRun, ToolCall

try:
    from langchain_core.agents import AgentAction, AgentFinish
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise missing_extra("langchain", "langchain", exc) from exc

try:
    from langgraph.errors import GraphBubbleUp

    _CONTROL_FLOW: tuple[type[BaseException], ...] = (GraphBubbleUp, AgentKilled)
except ImportError:  # LangChain without LangGraph
    _CONTROL_FLOW = (AgentKilled,)

__all__ = ["AsyncTrcCallbackHandler", "TrcCallbackHandler", "instrument", "register_tools"]

MARKER_KEY = "trc_handler"
"""Metadata key naming the handler that owns a run (set by :func:`instrument`)."""

R = TypeVar("R", bound=Runnable[Any, Any])

_recording: dict[UUID, AgentRun] = {}
"""LangChain run id -> the agent run recording it, across handlers (for nested agents)."""
_recording_lock = threading.Lock()


@dataclass
class _Agent:
    """One agent run the handler records into."""

    run: AgentRun
    owned: OwnedRun | None
    root_id: UUID
    step_open: bool = False
    step_failed: bool = False
    reentry: list[ToolCall] = field(default_factory=list)
    errors_seen: set[int] = field(default_factory=set)


@dataclass
class _Node:
    """A LangChain run (chain, model, tool, retriever) and the agent it belongs to."""

    agent: _Agent
    kind: str
    started: float = 0.0
    model: str | None = None
    call: ToolCall | None = None
    tool_name: str | None = None


class TrcCallbackHandler(BaseCallbackHandler):
    """Maps LangChain callbacks to agent events; raises :class:`AgentKilled` at boundaries.

    ``target`` is a monitor (a new task per top-level invocation, of ``agent_id``)
    or an open run to record into. ``subagents`` names chains or LangGraph nodes
    that are agents of their own (child runs with parent links).
    """

    raise_error = True
    run_inline = True

    def __init__(
        self,
        target: RunFactory | AgentRun,
        agent_id: str | None = None,
        *,
        agent_type: str | None = None,
        subagents: Collection[str] = (),
        steps: Literal["llm", "node"] = "llm",
    ) -> None:
        if isinstance(target, AgentRun):
            self._factory: RunFactory | None = None
            self._fixed: AgentRun | None = target
            self.agent_id = target.agent_id
        else:
            if agent_id is None:
                raise ValueError("agent_id is needed when the target is a monitor")
            self._factory = target
            self._fixed = None
            self.agent_id = agent_id
        self.agent_type = agent_type
        self.subagents = frozenset(subagents)
        self.steps = steps
        self.marker = uuid.uuid4().hex
        self._nodes: dict[UUID, _Node] = {}
        self._lock = threading.Lock()

    # -- bookkeeping -----------------------------------------------------------

    def _ours(self, metadata: dict[str, Any] | None) -> bool:
        """False for runs another instrumented agent (an inner graph) owns."""
        owner = (metadata or {}).get(MARKER_KEY)
        return owner is None or owner == self.marker

    def _node(self, run_id: UUID) -> _Node | None:
        with self._lock:
            return self._nodes.get(run_id)

    def _pop(self, run_id: UUID) -> _Node | None:
        with _recording_lock:
            _recording.pop(run_id, None)
        with self._lock:
            return self._nodes.pop(run_id, None)

    def _agent_for(self, run_id: UUID, parent_run_id: UUID | None) -> _Agent | None:
        """The agent a new LangChain run belongs to, opening one for a root run."""
        parent = self._node(parent_run_id) if parent_run_id is not None else None
        if parent is not None:
            return parent.agent
        if self._fixed is not None:
            return _Agent(self._fixed, None, run_id)
        if self._factory is None:  # pragma: no cover - one of the two is always set
            return None
        # Inside a run another handler records (an instrumented graph in a node of
        # another): a sub-agent of that run. Isolated either way, so the correlation
        # context never leaks into the caller's context (async callbacks start and
        # end in different contexts).
        with _recording_lock:
            enclosing = _recording.get(parent_run_id) if parent_run_id is not None else None
        owned = OwnedRun(
            self._factory,
            self.agent_id,
            agent_type=self.agent_type,
            task_id=run_id.hex,
            parent=enclosing,
            isolated=True,
        )
        return _Agent(owned.run, owned, run_id)

    def _start(self, run_id: UUID, parent_run_id: UUID | None, kind: str, **extra: Any) -> _Node:
        agent = self._agent_for(run_id, parent_run_id)
        assert agent is not None
        node = _Node(agent, kind, started=time.perf_counter(), **extra)
        self._track(run_id, node)
        return node

    def _track(self, run_id: UUID, node: _Node) -> None:
        with self._lock:
            self._nodes[run_id] = node
        with _recording_lock:
            _recording[run_id] = node.agent.run

    # -- steps -----------------------------------------------------------------

    def _begin_step(self, agent: _Agent, action: str | None, context: str | None) -> None:
        self._end_step(agent)
        agent.run.step(action, context=context)
        agent.step_open = True

    def _end_step(self, agent: _Agent, output: Any = None) -> None:
        for call in agent.reentry:
            call.reasoning_reentered()
        agent.reentry.clear()
        if agent.step_open:
            agent.step_open = False
            agent.run.end_step(
                output_summary=summarize(output), status="error" if agent.step_failed else "ok"
            )
            agent.step_failed = False

    def _close_if_root(self, node: _Node, run_id: UUID, exc: BaseException | None = None) -> None:
        """A root run (an invocation) ended: end its step and, if we opened it, the task."""
        if node.agent.root_id != run_id:
            return
        self._end_step(node.agent)
        with self._lock:  # runs a kill stopped before they could end
            left = [k for k, n in self._nodes.items() if n.agent is node.agent]
            for key in left:
                del self._nodes[key]
        with _recording_lock:
            for key in left:
                _recording.pop(key, None)
        if node.agent.owned is not None:
            node.agent.owned.finish(exc)

    def _record_error(self, agent: _Agent, error: BaseException, tool: str | None = None) -> None:
        if isinstance(error, _CONTROL_FLOW) or id(error) in agent.errors_seen:
            return
        agent.errors_seen.add(id(error))
        agent.step_failed = True
        agent.run.error(error, tool_name=tool)

    # -- chains (graphs, nodes, agents) ------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._ours(metadata):
            return
        name = kwargs.get("name") or _name(serialized)
        parent = self._node(parent_run_id) if parent_run_id is not None else None
        if parent is not None and name in self.subagents and self._factory is not None:
            owned = OwnedRun(
                self._factory,
                agent_id_from(name),
                agent_type=self.agent_type,
                task_id=run_id.hex,
                parent=parent.agent.run,
            )
            agent = _Agent(owned.run, owned, run_id)
            self._track(run_id, _Node(agent, "chain"))
        else:
            agent = self._start(run_id, parent_run_id, "chain").agent
        agent.run.check()
        if self.steps == "node" and name and name == (metadata or {}).get("langgraph_node"):
            self._begin_step(agent, name, None)

    def on_chain_end(
        self,
        outputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        node = self._pop(run_id)
        if node is not None and node.agent.root_id == run_id:
            self._end_step(node.agent, _final_text(outputs))
            self._close_if_root(node, run_id)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        node = self._pop(run_id)
        if node is None:
            return
        self._record_error(node.agent, error)
        self._close_if_root(node, run_id, error)

    # -- models ------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        context = "\n".join(str(m.content) for batch in messages for m in batch)
        self._model_start(serialized, context, run_id, parent_run_id, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(serialized, "\n".join(prompts), run_id, parent_run_id, metadata, kwargs)

    def _model_start(
        self,
        serialized: dict[str, Any] | None,
        context: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: dict[str, Any] | None,
        extra: dict[str, Any],
    ) -> None:
        if not self._ours(metadata):
            return
        meta = metadata or {}
        params = extra.get("invocation_params") or {}
        model = meta.get("ls_model_name") or params.get("model") or params.get("model_name")
        model = model or extra.get("name") or _name(serialized)
        node = self._start(run_id, parent_run_id, "llm", model=model)
        node.agent.run.check()
        if self.steps == "llm":
            self._begin_step(node.agent, meta.get("langgraph_node") or model, context)
        else:
            for call in node.agent.reentry:
                call.reasoning_reentered()
            node.agent.reentry.clear()

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        node = self._pop(run_id)
        if node is None:
            return
        prompt, completion, model = _usage(response)
        node.agent.run.llm_call(
            model=model or node.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            duration_ms=(time.perf_counter() - node.started) * 1000,
        )
        self._close_if_root(node, run_id)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        node = self._pop(run_id)
        if node is not None:
            self._record_error(node.agent, error)
            self._close_if_root(node, run_id, error)

    # -- tools and retrievers ----------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._ours(metadata):
            return
        name = kwargs.get("name") or _name(serialized) or "tool"
        self._tool_start(name, inputs if inputs is not None else input_str, run_id, parent_run_id)

    def _tool_start(self, name: str, args: Any, run_id: UUID, parent_run_id: UUID | None) -> None:
        node = self._start(run_id, parent_run_id, "tool", tool_name=name)
        call = node.agent.run.tool(name, args)  # a kill boundary
        call.params_extracted()
        call.invoked()
        node.call = call

    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        content = getattr(output, "content", output)
        status = getattr(output, "status", "success")
        self._tool_end(
            run_id,
            output_summary=summarize(content),
            status="error" if status == "error" else "ok",
            result=content,
        )

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._tool_end(run_id, error)

    def _tool_end(self, run_id: UUID, error: BaseException | None = None, **received: Any) -> None:
        """A tool's (or retriever's) response: parsed unless it failed; reasoning next."""
        node = self._pop(run_id)
        if node is None or node.call is None:
            return
        if error is not None:
            node.call.response_received(error=error if isinstance(error, Exception) else None)
        else:
            node.call.response_received(**received)
            node.call.response_parsed()
        node.agent.reentry.append(node.call)
        self._close_if_root(node, run_id, error)

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self._ours(metadata):
            return
        name = kwargs.get("name") or _name(serialized) or "retriever"
        self._tool_start(name, {"query": query}, run_id, parent_run_id)

    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._tool_end(run_id, output_summary=f"{len(documents)} documents")

    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.on_tool_error(error, run_id=run_id, parent_run_id=parent_run_id)

    # -- classic AgentExecutor ---------------------------------------------------

    def on_agent_action(
        self,
        action: AgentAction,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        node = self._node(run_id)
        if node is not None:
            node.agent.run.check()  # the agent chose a tool: stop before it runs

    def on_agent_finish(
        self,
        finish: AgentFinish,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        node = self._node(run_id)
        if node is not None:
            self._end_step(node.agent, finish.return_values)


class AsyncTrcCallbackHandler(TrcCallbackHandler):
    """:class:`TrcCallbackHandler` for ``ainvoke``/``astream``: a PAUSE waits without
    blocking the event loop.

    Its start hooks are coroutines, which LangChain awaits on the async path (and
    whose exceptions it would swallow on the sync one: use the plain handler for
    ``invoke``).
    """

    async def _pause_point(self, parent_run_id: UUID | None) -> None:
        parent = self._node(parent_run_id) if parent_run_id is not None else None
        run = parent.agent.run if parent is not None else self._fixed
        if run is not None:
            await run.checkpoint()

    async def on_chain_start(  # type: ignore[override]
        self, serialized: dict[str, Any] | None, inputs: Any, **kwargs: Any
    ) -> None:
        await self._pause_point(kwargs.get("parent_run_id"))
        super().on_chain_start(serialized, inputs, **kwargs)

    async def on_chat_model_start(  # type: ignore[override]
        self, serialized: dict[str, Any] | None, messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        await self._pause_point(kwargs.get("parent_run_id"))
        super().on_chat_model_start(serialized, messages, **kwargs)

    async def on_llm_start(  # type: ignore[override]
        self, serialized: dict[str, Any] | None, prompts: list[str], **kwargs: Any
    ) -> None:
        await self._pause_point(kwargs.get("parent_run_id"))
        super().on_llm_start(serialized, prompts, **kwargs)

    async def on_tool_start(  # type: ignore[override]
        self, serialized: dict[str, Any] | None, input_str: str, **kwargs: Any
    ) -> None:
        await self._pause_point(kwargs.get("parent_run_id"))
        super().on_tool_start(serialized, input_str, **kwargs)

    async def on_retriever_start(  # type: ignore[override]
        self, serialized: dict[str, Any] | None, query: str, **kwargs: Any
    ) -> None:
        await self._pause_point(kwargs.get("parent_run_id"))
        super().on_retriever_start(serialized, query, **kwargs)


def instrument(
    runnable: R,
    target: RunFactory | AgentRun,
    agent_id: str | None = None,
    *,
    agent_type: str | None = None,
    subagents: Collection[str] = (),
    steps: Literal["llm", "node"] = "llm",
    asynchronous: bool = False,
) -> R:
    """``runnable`` (a compiled LangGraph graph, an agent, any Runnable) monitored and killable.

    Returns the runnable bound to a :class:`TrcCallbackHandler` (an
    :class:`AsyncTrcCallbackHandler` with ``asynchronous=True``, for code that
    runs it with ``ainvoke``/``astream`` and must not block its event loop while
    paused); the handler's marker in the metadata keeps an outer instrumented
    graph from recording this one's events twice.
    """
    kind = AsyncTrcCallbackHandler if asynchronous else TrcCallbackHandler
    handler = kind(target, agent_id, agent_type=agent_type, subagents=subagents, steps=steps)
    bound = runnable.with_config(callbacks=[handler], metadata={MARKER_KEY: handler.marker})
    return bound  # type: ignore[return-value]  # with_config keeps the graph's type


def register_tools(
    tools: Iterable[BaseTool],
    *,
    kind: ActionKind,
    compensate: Compensation | None = None,
    registry: ActionRegistry = default_registry,
) -> list[str]:
    """Register LangChain tools in the action registry under their tool names.

    ``compensate(args, result)`` undoes one call of a ``write`` tool on ROLLBACK:
    ``args`` is the tool's input dict, ``result`` what the tool returned.
    """
    names = []
    for tool in tools:
        registry.register(tool.name, kind=kind, compensate=compensate)
        names.append(tool.name)
    return names


def _name(serialized: dict[str, Any] | None) -> str | None:
    if not serialized:
        return None
    name = serialized.get("name")
    if isinstance(name, str):
        return name
    ids = serialized.get("id")
    return str(ids[-1]) if isinstance(ids, list) and ids else None


def _final_text(outputs: Any) -> Any:
    """The last message's text of a graph's state, else the outputs themselves."""
    messages = outputs.get("messages") if isinstance(outputs, dict) else None
    if isinstance(messages, list) and messages:
        return getattr(messages[-1], "content", messages[-1])
    return getattr(outputs, "content", outputs)


def _usage(response: LLMResult) -> tuple[int, int, str | None]:
    """Prompt and completion tokens and the model name of one LLM result."""
    output = response.llm_output or {}
    model = output.get("model_name") or output.get("model")
    usage = output.get("token_usage") or output.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
    completion = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    if prompt or completion:
        return prompt, completion, model
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            meta = getattr(message, "usage_metadata", None) or {}
            prompt += int(meta.get("input_tokens") or 0)
            completion += int(meta.get("output_tokens") or 0)
            response_meta = getattr(message, "response_metadata", None) or {}
            model = model or response_meta.get("model_name") or response_meta.get("model")
    return prompt, completion, model
