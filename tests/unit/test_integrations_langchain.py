"""LangChain/LangGraph callback handler: real graphs and fake chat models, events into a list."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from agents_bridge import AgentKilled, propagation
from agents_bridge.actions import registry
from agents_bridge.integrations.langchain import TrcCallbackHandler, instrument, register_tools
from tests.unit.events import SIX_STAGES
from tests.unit.test_integrations import RecordingMonitor, kill_command, stages


@tool
def kb_search(query: str) -> str:
    """Search the knowledge base."""
    return f"hits for {query}"


@tool
def flaky(query: str) -> str:
    """Always fails."""
    raise ValueError("backend down")


def turn(name: str, args: dict[str, Any], n: int, tokens: int = 100) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": args, "id": f"c{n}"}],
        usage_metadata={"input_tokens": tokens, "output_tokens": 10, "total_tokens": tokens + 10},
    )


def answer(text: str, tokens: int = 200) -> AIMessage:
    return AIMessage(
        content=text,
        usage_metadata={"input_tokens": tokens, "output_tokens": 5, "total_tokens": tokens + 5},
    )


def react(messages: Iterator[AIMessage], tools: list[Any], **tool_node: Any) -> Any:
    model = GenericFakeChatModel(messages=messages)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", ToolNode(tools, **tool_node))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


def test_a_react_graph_is_recorded_step_by_step() -> None:
    monitor = RecordingMonitor()
    graph = instrument(
        react(iter([turn("kb_search", {"query": "refund"}, 1), answer("5 days")]), [kb_search]),
        monitor,
        "support",
        agent_type="support-bot",
    )
    out = graph.invoke({"messages": [("user", "refund?")]})
    assert out["messages"][-1].content == "5 days"
    assert monitor.types() == [
        "task_start",
        "step_start",
        "llm_call",
        *["tool_call"] * 6,
        "step_end",
        "step_start",
        "llm_call",
        "step_end",
        "task_end",
    ]
    start = monitor.of("task_start")[0]
    assert start["agent_type"] == "support-bot"
    assert [e["action"] for e in monitor.of("step_start")] == ["agent", "agent"]
    assert monitor.of("step_start")[0]["context_hash"]  # the prompt leaves as a hash only
    assert [(e["prompt_tokens"], e["completion_tokens"]) for e in monitor.of("llm_call")] == [
        (100, 10),
        (200, 5),
    ]
    assert [e["prompt_tokens"] for e in monitor.of("step_end")] == [100, 200]
    assert monitor.of("step_end")[-1]["output_summary"] == "5 days"
    assert stages(monitor) == [("kb_search", s) for s in SIX_STAGES]
    received = next(e for e in monitor.of("tool_call") if e["tool_stage"] == "response_received")
    assert received["output_summary"] == "hits for refund" and received["status"] == "ok"
    assert monitor.of("task_end")[0]["status"] == "ok"
    # The root run id is the task id, so LangSmith traces and our tasks line up.
    assert len({e["task_id"] for e in monitor.events}) == 1


def test_every_invocation_is_a_task_of_its_own() -> None:
    monitor = RecordingMonitor()
    graph = instrument(react(iter([answer("a"), answer("b")]), [kb_search]), monitor, "support")
    graph.invoke({"messages": [("user", "1")]})
    graph.invoke({"messages": [("user", "2")]})
    assert len({e["task_id"] for e in monitor.of("task_start")}) == 2
    assert [e["status"] for e in monitor.of("task_end")] == ["ok", "ok"]


def test_a_kill_stops_the_graph_before_the_next_tool_with_a_clear_exception() -> None:
    monitor = RecordingMonitor()
    invoked: list[str] = []

    @tool
    def lookup(query: str) -> str:
        """Look up; the engine kills the run during the second call."""
        invoked.append(query)
        if len(invoked) == 2:
            monitor.kill(monitor.runs[0])
        return "same again"

    looping = (turn("lookup", {"query": "refund"}, n) for n in range(100))
    graph = instrument(react(looping, [lookup]), monitor, "looper")
    with pytest.raises(AgentKilled, match=r"agent killed by command .*: test kill"):
        graph.invoke({"messages": [("user", "refund?")]})
    assert invoked == ["refund", "refund"]
    assert len(monitor.of("control_ack")) == 1
    assert monitor.of("task_end")[0]["status"] == "killed"
    assert not monitor.of("error")  # a kill is not an agent error


async def test_a_kill_stops_ainvoke_too() -> None:
    monitor = RecordingMonitor()
    invoked: list[str] = []

    @tool
    async def lookup(query: str) -> str:
        """Look up."""
        invoked.append(query)
        monitor.kill(monitor.runs[0])
        return "x"

    looping = (turn("lookup", {"query": "q"}, n) for n in range(100))
    graph = instrument(react(looping, [lookup]), monitor, "looper")
    with pytest.raises(AgentKilled):
        await graph.ainvoke({"messages": [("user", "go")]})
    assert invoked == ["q"]


def test_a_kill_comes_through_a_tool_node_that_handles_tool_errors() -> None:
    """handle_tool_errors=True turns exceptions into messages; the next boundary still halts."""
    monitor = RecordingMonitor()

    @tool
    def lookup(query: str) -> str:
        """Look up; the run is killed during the call."""
        monitor.kill(monitor.runs[0])
        return query

    two_calls = AIMessage(
        content="",
        tool_calls=[
            {"name": "lookup", "args": {"query": "a"}, "id": "c1"},
            {"name": "lookup", "args": {"query": "b"}, "id": "c2"},
        ],
    )
    graph = instrument(
        react(iter([two_calls, answer("never")]), [lookup], handle_tool_errors=True),
        monitor,
        "looper",
    )
    with pytest.raises(AgentKilled):
        graph.invoke({"messages": [("user", "go")]})
    assert len(monitor.of("llm_call")) == 1, "the model must not be called after the kill"
    assert monitor.of("task_end")[0]["status"] == "killed"


def test_tool_errors_are_failed_responses_and_a_raised_error_is_recorded_once() -> None:
    monitor = RecordingMonitor()
    graph = instrument(react(iter([turn("flaky", {"query": "q"}, 1)]), [flaky]), monitor, "fragile")
    with pytest.raises(ValueError, match="backend down"):
        graph.invoke({"messages": [("user", "go")]})
    received = next(e for e in monitor.of("tool_call") if e["tool_stage"] == "response_received")
    assert received["status"] == "error" and received["error_type"] == "ValueError"
    assert [e["error_type"] for e in monitor.of("error")] == ["ValueError"]
    assert monitor.of("step_end")[0]["status"] == "error"
    assert monitor.of("task_end")[0]["status"] == "error"


def test_handled_tool_errors_reach_the_model_and_the_run_goes_on() -> None:
    monitor = RecordingMonitor()
    graph = instrument(
        react(iter([turn("flaky", {"query": "q"}, 1), answer("sorry")]), [flaky],
              handle_tool_errors=True),
        monitor,
        "fragile",
    )  # fmt: skip
    graph.invoke({"messages": [("user", "go")]})
    statuses = [
        e["status"] for e in monitor.of("tool_call") if e["tool_stage"] == "response_received"
    ]
    assert statuses == ["error"]  # ToolNode's error message has status "error"
    assert monitor.of("task_end")[0]["status"] == "ok"


def test_a_subgraph_named_as_subagent_is_a_child_run_in_the_chain() -> None:
    monitor = RecordingMonitor()
    inner = react(iter([turn("kb_search", {"query": "k"}, 1), answer("found")]), [kb_search])
    builder = StateGraph(MessagesState)
    builder.add_node("researcher", inner)
    builder.add_edge(START, "researcher")
    builder.add_edge("researcher", END)
    graph = instrument(builder.compile(), monitor, "planner", subagents=["researcher"])
    graph.invoke({"messages": [("user", "research")]})

    planner_task = monitor.of("task_start", "planner")[0]["task_id"]
    child = [e for e in monitor.events if e["agent_id"] == "researcher"]
    assert child[0]["event_type"] == "task_start" and child[-1]["event_type"] == "task_end"
    assert {e["parent_task_id"] for e in child} == {planner_task}
    assert {e["correlation_id"] for e in child} == {planner_task}
    assert monitor.of("subagent_spawn", "planner")
    assert stages(monitor, "researcher") == [("kb_search", s) for s in SIX_STAGES]
    assert not stages(monitor, "planner")


def test_an_instrumented_graph_inside_another_is_recorded_once_as_a_subagent() -> None:
    monitor = RecordingMonitor()
    inner = instrument(
        react(iter([turn("kb_search", {"query": "k"}, 1), answer("found")]), [kb_search]),
        monitor,
        "inner",
    )
    builder = StateGraph(MessagesState)
    builder.add_node("delegate", lambda state: inner.invoke(state))
    builder.add_edge(START, "delegate")
    builder.add_edge("delegate", END)
    outer = instrument(builder.compile(), monitor, "outer")
    outer.invoke({"messages": [("user", "go")]})

    outer_task = monitor.of("task_start", "outer")[0]["task_id"]
    assert stages(monitor, "inner") == [("kb_search", s) for s in SIX_STAGES]
    assert not stages(monitor, "outer")
    assert {e["correlation_id"] for e in monitor.events} == {outer_task}
    assert monitor.of("task_start", "inner")[0]["parent_task_id"] == outer_task


def test_node_steps_and_a_run_you_opened_yourself() -> None:
    monitor = RecordingMonitor()
    graph = react(iter([turn("kb_search", {"query": "k"}, 1), answer("ok")]), [kb_search])
    with monitor.run("manual") as run:
        graph.invoke(
            {"messages": [("user", "go")]},
            config={"callbacks": [TrcCallbackHandler(run, steps="node")]},
        )
        assert not run.killed
    assert [e["action"] for e in monitor.of("step_start")] == ["agent", "tools", "agent"]
    assert [e["event_type"] for e in monitor.events].count("task_start") == 1


def test_retrievers_are_recorded_as_tool_calls() -> None:
    class Docs(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return [Document(page_content=query), Document(page_content="more")]

    monitor = RecordingMonitor()
    chain = instrument(RunnableLambda(lambda q: Docs().invoke(q)), monitor, "rag")
    chain.invoke("kafka")
    assert stages(monitor) == [("Docs", s) for s in SIX_STAGES]
    received = next(e for e in monitor.of("tool_call") if e["tool_stage"] == "response_received")
    assert received["output_summary"] == "2 documents"


def test_tools_register_in_the_action_registry() -> None:
    names = register_tools([kb_search], kind="read")
    try:
        assert names == ["kb_search"]
        spec = registry.spec("kb_search")
        assert spec.registered and spec.kind == "read"
    finally:
        registry.unregister("kb_search")


def test_a_monitor_target_needs_an_agent_id() -> None:
    with pytest.raises(ValueError, match="agent_id"):
        TrcCallbackHandler(RecordingMonitor())


async def test_the_async_handler_records_the_same_and_is_killed() -> None:
    monitor = RecordingMonitor()
    invoked: list[str] = []

    @tool
    async def lookup(query: str) -> str:
        """Look up."""
        invoked.append(query)
        if len(invoked) == 2:
            monitor.kill(monitor.runs[0])
        return "x"

    looping = (turn("lookup", {"query": "q"}, n) for n in range(100))
    graph = instrument(react(looping, [lookup]), monitor, "looper", asynchronous=True)
    with pytest.raises(AgentKilled):
        await graph.ainvoke({"messages": [("user", "go")]})
    assert invoked == ["q", "q"]
    assert stages(monitor)[:6] == [("lookup", s) for s in SIX_STAGES]
    assert monitor.of("task_end")[0]["status"] == "killed"


async def test_a_paused_async_graph_waits_without_blocking_the_event_loop() -> None:
    monitor = RecordingMonitor()
    release = asyncio.Event()

    @tool
    async def lookup(query: str) -> str:
        """Look up; the run is paused during the call."""
        run = monitor.runs[0]
        run.apply(dict(kill_command(run.task_id), kind="PAUSE", command_id="p1"))
        release.set()
        return "x"

    graph = instrument(
        react(iter([turn("lookup", {"query": "q"}, 1), answer("done")]), [lookup]),
        monitor,
        "pausable",
        asynchronous=True,
    )
    task = asyncio.create_task(graph.ainvoke({"messages": [("user", "go")]}))
    await asyncio.wait_for(release.wait(), 10)
    deadline = time.monotonic() + 10
    while not any(e["status"] == "paused" for e in monitor.of("control_ack")):
        assert time.monotonic() < deadline, "the run did not pause at its next boundary"
        await asyncio.sleep(0.01)  # the loop keeps running while the agent is paused
    assert not task.done() and len(monitor.of("llm_call")) == 1
    run = monitor.runs[0]
    run.apply(dict(kill_command(run.task_id), kind="RESUME", command_id="r1"))
    out = await asyncio.wait_for(task, 10)
    assert out["messages"][-1].content == "done"
    assert monitor.of("task_end")[0]["status"] == "ok"


def test_tool_calls_are_journaled_with_their_arguments_and_results_for_rollback() -> None:
    @tool
    def create_file(path: str) -> str:
        """Create a file."""
        return f"created {path}"

    undone: list[Any] = []
    register_tools([create_file], kind="write", compensate=lambda a, r: undone.append((a, r)))
    try:
        monitor = RecordingMonitor()
        script = iter([turn("create_file", {"path": "/tmp/x"}, 1), answer("done")])
        instrument(react(script, [create_file]), monitor, "writer").invoke(
            {"messages": [("user", "go")]}
        )
        [action] = monitor.runs[0].actions
        assert action.spec.kind == "write" and action.args == {"path": "/tmp/x"}
        assert action.result == "created /tmp/x" and action.status == "ok"
        assert action.spec.compensate is not None
        action.spec.compensate(action.args, action.result)
        assert undone == [({"path": "/tmp/x"}, "created /tmp/x")]
    finally:
        registry.unregister("create_file")


async def test_async_runs_leave_no_correlation_context_behind() -> None:
    """Each ainvoke/astream is its own chain; the caller's context is left as it was."""
    monitor = RecordingMonitor()
    for asynchronous in (True, False):
        graph = instrument(
            react(iter([turn("kb_search", {"query": "k"}, 1), answer("a")]), [kb_search]),
            monitor,
            "a",
            asynchronous=asynchronous,
        )
        await graph.ainvoke({"messages": [("user", "go")]})
        assert propagation.current() is None
    graph = instrument(react(iter([answer("b")]), [kb_search]), monitor, "a")
    async for _ in graph.astream({"messages": [("user", "go")]}):
        pass
    assert propagation.current() is None
    starts = monitor.of("task_start")
    assert len(starts) == 3
    assert [e["correlation_id"] for e in starts] == [e["task_id"] for e in starts]
    assert all(e["parent_task_id"] is None for e in starts)


def test_a_graph_run_inside_a_run_of_your_own_joins_its_chain() -> None:
    monitor = RecordingMonitor()
    graph = instrument(react(iter([answer("b")]), [kb_search]), monitor, "child")
    with monitor.run("parent") as parent:
        graph.invoke({"messages": [("user", "go")]})
    child = monitor.of("task_start", "child")[0]
    assert child["parent_task_id"] == parent.task_id
    assert child["correlation_id"] == parent.correlation_id
