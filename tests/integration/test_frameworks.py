"""Framework integrations end to end on the real broker, with the frameworks' own fake models.

A looping agent of each framework is killed by the detection engine (three
equivalent calls of one tool -> KILL before the fourth); a healthy one finishes
with every step, model call and tool stage recorded on its topic.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, function_tool, handoff
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry.sdk.trace import TracerProvider

from agents_bridge import AgentKilled, Monitor, load_settings
from agents_bridge.actions import ActionRegistry
from agents_bridge.integrations import plain
from agents_bridge.integrations.langchain import instrument, register_tools
from agents_bridge.integrations.openai_agents import run_agent
from agents_bridge.integrations.otel import TrcSpanProcessor
from agents_bridge.integrations.scripted_model import ScriptedModel, call, say
from agents_bridge.topics import events_topic
from app.worker_process import WorkerProcess
from tests.integration.conftest import unique
from tests.integration.topic_reader import read_until
from tests.integration.worker_api import issue
from tests.unit.events import SIX_STAGES

pytestmark = pytest.mark.integration

MODEL_LATENCY_S = 0.5
"""A looping agent's model call: long enough for a kill (p99 ~ 260 ms under load) to land."""

Events = list[dict[str, Any]]


async def events_of(
    bootstrap_servers: str, agent_id: str, *, until: str = "task_end", count: int = 1
) -> Events:
    """The agent's events once ``count`` events of type ``until`` are on its topic."""
    pairs = await read_until(
        bootstrap_servers,
        events_topic(agent_id),
        lambda seen: sum(1 for _, v in seen if v and v["event_type"] == until) >= count,
        what=f"{count} {until} event(s) of {agent_id}",
    )
    return [v for _, v in pairs if v]


def invocations(events: Events, tool_name: str) -> int:
    return sum(
        1
        for e in events
        if e["event_type"] == "tool_call"
        and e["tool_name"] == tool_name
        and e["tool_stage"] in (None, "invoked")
    )


def assert_killed_by_the_engine(killed: AgentKilled, events: Events, task_id: str) -> None:
    command = killed.command
    assert command["kind"] == "KILL"
    assert command["target_type"] == "task" and command["target_id"] == task_id
    assert "called 3 times with equivalent arguments" in (command["reason"] or "")
    ack = [e for e in events if e["event_type"] == "control_ack"]
    assert ack and ack[0]["command_id"] == command["command_id"]
    assert [e["status"] for e in events if e["event_type"] == "task_end"] == ["killed"]


# -- LangGraph ------------------------------------------------------------------------


@tool
def kb_search(query: str, limit: int = 5) -> str:
    """Search the knowledge base."""
    return f"{limit} articles about {query}"


@tool
def weather(city: str) -> str:
    """Today's weather in a city."""
    return f"sunny in {city}"


class SlowFakeChatModel(GenericFakeChatModel):
    """LangChain's scripted chat model with a model's latency."""

    latency_s: float = MODEL_LATENCY_S

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self.latency_s)
        return self._generate(messages, stop=stop, **kwargs)


def tool_turn(name: str, args: dict[str, Any], n: int) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": args, "id": f"call-{n}"}],
        usage_metadata={"input_tokens": 100 + n, "output_tokens": 20, "total_tokens": 120 + n},
    )


def react_graph(model: GenericFakeChatModel, tools: list[Any]) -> Any:
    """A ReAct agent: the model node, a ToolNode, and the usual conditional edge."""

    async def think(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    def think_sync(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", think_sync if not isinstance(model, SlowFakeChatModel) else think)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


async def test_looping_langgraph_agent_is_killed_by_the_engine(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent_id = unique("lg-looper")
    # The same search three ways (key order and case differ), then again and again.
    looping: Iterator[AIMessage] = (
        tool_turn("kb_search", args, n)
        for n, args in enumerate(
            itertools.cycle(
                [
                    {"query": "refund policy", "limit": 5},
                    {"limit": 5, "query": "Refund Policy"},
                    {"query": "refund  policy", "limit": 5},
                ]
            )
        )
    )
    graph = instrument(
        react_graph(SlowFakeChatModel(messages=looping), [kb_search]), monitor, agent_id
    )

    with pytest.raises(AgentKilled) as killed:
        await asyncio.wait_for(graph.ainvoke({"messages": [("user", "refund?")]}), timeout=30)

    assert monitor.flush(10)
    events = await events_of(bootstrap_servers, agent_id)
    assert invocations(events, "kb_search") == 3, "the kill must land before the 4th call"
    assert_killed_by_the_engine(killed.value, events, events[0]["task_id"])


async def test_healthy_langgraph_agent_completes_with_every_step_recorded(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent_id = unique("lg-healthy")
    script = [
        tool_turn("weather", {"city": city}, n) for n, city in enumerate(["Oslo", "Lima", "Pune"])
    ]
    final = AIMessage(
        content="Sunny everywhere.",
        usage_metadata={"input_tokens": 300, "output_tokens": 12, "total_tokens": 312},
    )
    model = GenericFakeChatModel(messages=iter([*script, final]))
    graph = instrument(react_graph(model, [weather]), monitor, agent_id)

    # Sync invoke, in a thread of its own as an agent worker would run it.
    outcome = await asyncio.wait_for(
        asyncio.to_thread(graph.invoke, {"messages": [("user", "weather?")]}), 30
    )
    assert outcome["messages"][-1].content == "Sunny everywhere."

    assert monitor.flush(10)
    events = await events_of(bootstrap_servers, agent_id)
    types = [e["event_type"] for e in events]
    assert types[0] == "task_start" and types[-1] == "task_end"
    assert events[-1]["status"] == "ok"
    assert "control_ack" not in types
    # A step per model call, each closed with its own tokens.
    starts = [e for e in events if e["event_type"] == "step_start"]
    ends = [e for e in events if e["event_type"] == "step_end"]
    assert [e["step_index"] for e in starts] == [1, 2, 3, 4]
    assert [e["step_index"] for e in ends] == [1, 2, 3, 4]
    assert [e["prompt_tokens"] for e in ends] == [100, 101, 102, 300]
    assert ends[-1]["output_summary"] == "Sunny everywhere."
    llm = [e for e in events if e["event_type"] == "llm_call"]
    assert [(e["prompt_tokens"], e["completion_tokens"]) for e in llm] == [
        (100, 20),
        (101, 20),
        (102, 20),
        (300, 12),
    ]
    # Each tool call at all six stages, in order, inside the step that chose it.
    stages = [(e["step_index"], e["tool_stage"]) for e in events if e["event_type"] == "tool_call"]
    assert stages == [(step, stage) for step in (1, 2, 3) for stage in SIX_STAGES]
    received = [e for e in events if e.get("tool_stage") == "response_received"]
    assert [e["output_summary"] for e in received] == [
        "sunny in Oslo",
        "sunny in Lima",
        "sunny in Pune",
    ]
    # One task, one chain.
    assert {e["task_id"] for e in events} == {events[0]["task_id"]}
    assert {e["correlation_id"] for e in events} == {events[0]["task_id"]}


async def test_langgraph_subagent_joins_the_chain_with_parent_links(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    planner_id = unique("lg-planner")
    researcher = unique("researcher")
    inner = react_graph(
        GenericFakeChatModel(
            messages=iter([tool_turn("kb_search", {"query": "kafka"}, 1), AIMessage("found")])
        ),
        [kb_search],
    )
    builder = StateGraph(MessagesState)
    builder.add_node(researcher, inner)  # a compiled graph as a node: a sub-agent
    builder.add_edge(START, researcher)
    builder.add_edge(researcher, END)
    graph = instrument(builder.compile(), monitor, planner_id, subagents=[researcher])

    await asyncio.wait_for(graph.ainvoke({"messages": [("user", "research kafka")]}), 30)

    assert monitor.flush(10)
    parent = await events_of(bootstrap_servers, planner_id)
    child = await events_of(bootstrap_servers, researcher)
    task_id = parent[0]["task_id"]
    spawn = [e for e in parent if e["event_type"] == "subagent_spawn"]
    assert spawn and spawn[0]["attributes"]["child_agent_id"] == researcher
    assert {e["correlation_id"] for e in child} == {task_id}
    assert {e["parent_task_id"] for e in child} == {task_id}
    assert {e["parent_agent_id"] for e in child} == {planner_id}
    assert invocations(child, "kb_search") == 1 and invocations(parent, "kb_search") == 0
    assert [e["status"] for e in child if e["event_type"] == "task_end"] == ["ok"]


async def test_langgraph_agent_is_paused_resumed_and_rolled_back_by_the_control_plane(
    bootstrap_servers: str, worker: WorkerProcess
) -> None:
    agent_id = unique("lg-writer")
    written: list[str] = []
    undone: list[str] = []

    @tool
    def create_file(path: str) -> str:
        """Create a file."""
        written.append(path)
        return path

    registry = ActionRegistry()
    register_tools(
        [create_file], kind="write", compensate=lambda a, r: undone.append(a["path"]),
        registry=registry,
    )  # fmt: skip
    script = iter(
        [
            tool_turn("create_file", {"path": "/tmp/a"}, 1),
            tool_turn("create_file", {"path": "/tmp/b"}, 2),
            AIMessage(content="both written"),
        ]
    )
    settings = load_settings(bootstrap_servers=bootstrap_servers)
    with Monitor(settings, registry=registry) as monitor:
        graph = instrument(
            react_graph(SlowFakeChatModel(messages=script), [create_file]),
            monitor,
            agent_id,
            asynchronous=True,
        )
        running = asyncio.create_task(graph.ainvoke({"messages": [("user", "write")]}))
        started = await events_of(bootstrap_servers, agent_id, until="task_start")
        task_id = started[0]["task_id"]

        await issue(worker, "PAUSE", "task", task_id, reason="test")
        await events_of(bootstrap_servers, agent_id, until="control_ack")
        assert not running.done(), "a paused agent does not finish"
        written_while_paused = list(written)
        await issue(worker, "RESUME", "task", task_id, reason="test")
        result = await asyncio.wait_for(running, 30)
        assert result["messages"][-1].content == "both written"
        assert written == ["/tmp/a", "/tmp/b"] and len(written_while_paused) <= 1

        await issue(worker, "ROLLBACK", "task", task_id, reason="test")
        events = await events_of(bootstrap_servers, agent_id, until="control_ack", count=3)
    acks = [e["status"] for e in events if e["event_type"] == "control_ack"]
    assert acks == ["paused", "resumed", "rolled_back"]
    assert undone == ["/tmp/b", "/tmp/a"], "compensations run newest first"
    compensations = [
        (e["tool_name"], e["status"]) for e in events if e["event_type"] == "compensation"
    ]
    assert compensations == [("create_file", "ok"), ("create_file", "ok")]


# -- OpenAI Agents SDK -------------------------------------------------------------------


@function_tool
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: shipped"


async def test_openai_agents_run_is_traced_and_killed_by_the_engine(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent_id = unique("oa-looper")
    model = ScriptedModel(
        [call("lookup_order", {"order_id": "A-17"})], repeat_last=True, latency_s=MODEL_LATENCY_S
    )
    agent = Agent(name="Orders", model=model, tools=[lookup_order])

    with pytest.raises(AgentKilled) as killed:
        await asyncio.wait_for(run_agent(monitor, agent, "where is A-17?", agent_id=agent_id), 30)

    assert monitor.flush(10)
    events = await events_of(bootstrap_servers, agent_id)
    assert invocations(events, "lookup_order") == 3, "the kill must land before the 4th call"
    assert_killed_by_the_engine(killed.value, events, events[0]["task_id"])
    assert [e["model"] for e in events if e["event_type"] == "llm_call"][:3] == [
        "scripted-model"
    ] * 3


async def test_openai_agents_handoff_runs_a_subagent_in_the_chain(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent_id, billing_name = unique("oa-support"), unique("Billing")
    billing = Agent(
        name=billing_name,
        model=ScriptedModel([call("lookup_order", {"order_id": "B-2"}), say("refunded")]),
        tools=[lookup_order],
    )
    support = Agent(
        name="Support",
        model=ScriptedModel([call(handoff(billing).tool_name)]),
        handoffs=[billing],
    )

    result = await asyncio.wait_for(run_agent(monitor, support, "refund", agent_id=agent_id), 30)
    assert result.final_output == "refunded"

    assert monitor.flush(10)
    parent = await events_of(bootstrap_servers, agent_id)
    child = await events_of(bootstrap_servers, billing_name)
    task_id = parent[0]["task_id"]
    handoffs = [e for e in parent if e["event_type"] == "tool_call" and e["tool_name"] == "handoff"]
    assert len(handoffs) == 1
    assert any(e["event_type"] == "subagent_spawn" for e in parent)
    assert {e["correlation_id"] for e in child} == {task_id}
    assert {e["parent_task_id"] for e in child} == {task_id}
    assert invocations(child, "lookup_order") == 1
    assert [e["prompt_tokens"] for e in child if e["event_type"] == "llm_call"] == [120, 120]
    assert [e["status"] for e in parent + child if e["event_type"] == "task_end"] == ["ok", "ok"]


# -- OpenTelemetry ------------------------------------------------------------------------


async def test_otel_instrumented_agent_is_recorded_and_killed_at_its_next_span(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent_id = unique("otel-looper")
    provider = TracerProvider()
    provider.add_span_processor(TrcSpanProcessor(monitor, agent_id))
    tracer = provider.get_tracer("an-otel-instrumented-agent-library")
    tool_calls: list[int] = []

    async def agent() -> None:
        """What an instrumented agent library does: GenAI spans around model and tool calls."""
        with tracer.start_as_current_span(
            "invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent"}
        ):
            for _ in range(20):
                with tracer.start_as_current_span(
                    "chat gpt-4o",
                    attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
                ) as chat:
                    await asyncio.sleep(MODEL_LATENCY_S)  # the model's latency
                    chat.set_attribute("gen_ai.usage.input_tokens", 200)
                    chat.set_attribute("gen_ai.usage.output_tokens", 25)
                with tracer.start_as_current_span(
                    "execute_tool web_search",
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "web_search",
                        "gen_ai.tool.call.arguments": '{"q": "kafka kill switch"}',
                    },
                ):
                    tool_calls.append(1)

    with pytest.raises(AgentKilled) as killed:
        await asyncio.wait_for(agent(), 30)
    assert len(tool_calls) == 3, "the kill must land before the 4th call"

    assert monitor.flush(10)
    events = await events_of(bootstrap_servers, agent_id)
    assert invocations(events, "web_search") == 3
    assert_killed_by_the_engine(killed.value, events, events[0]["task_id"])
    llm = [e for e in events if e["event_type"] == "llm_call"]
    assert llm[0]["model"] == "gpt-4o" and llm[0]["prompt_tokens"] == 200


# -- Plain Python --------------------------------------------------------------------------


async def test_plain_python_agent_is_killed_and_its_steps_recorded(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent_id = unique("plain-looper")

    @plain.tool
    async def fetch(url: str) -> str:
        return f"<html>{url}</html>"

    @plain.agent(monitor, agent_id)
    async def crawler() -> None:
        for _ in range(20):
            async with plain.step("decide"):
                await asyncio.sleep(MODEL_LATENCY_S)  # the model's latency
            await fetch("https://example.com/a")

    with pytest.raises(AgentKilled) as killed:
        await asyncio.wait_for(crawler(), 30)

    assert monitor.flush(10)
    events = await events_of(bootstrap_servers, agent_id)
    assert invocations(events, "fetch") == 3
    assert_killed_by_the_engine(killed.value, events, events[0]["task_id"])
    assert [e["step_index"] for e in events if e["event_type"] == "step_start"][:3] == [1, 2, 3]
