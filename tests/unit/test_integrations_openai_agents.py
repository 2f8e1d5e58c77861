"""OpenAI Agents SDK: the real Runner with a scripted Model, traced by our processor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    RunContextWrapper,
    RunHooks,
    Runner,
    function_tool,
    handoff,
    input_guardrail,
    set_trace_processors,
)

from agents_bridge import AgentKilled
from agents_bridge.actions import registry
from agents_bridge.integrations.openai_agents import (
    TrcRunHooks,
    TrcTracingProcessor,
    processor_for,
    run_agent,
)
from agents_bridge.integrations.scripted_model import ScriptedModel, call, say
from tests.unit.events import SIX_STAGES
from tests.unit.test_integrations import RecordingMonitor, kill_command, stages


@pytest.fixture
def monitor() -> Iterator[RecordingMonitor]:
    """A recording monitor whose processor is the SDK's only one (no export to OpenAI)."""
    recording = RecordingMonitor()
    set_trace_processors([processor_for(recording)])
    yield recording
    set_trace_processors([])


@function_tool
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: shipped"


def support_agent(*turns: Any, **options: Any) -> Agent[Any]:
    return Agent(name="Support", model=ScriptedModel(list(turns), **options), tools=[lookup_order])


async def test_a_run_is_one_task_with_steps_llm_calls_and_tool_stages(
    monitor: RecordingMonitor,
) -> None:
    agent = support_agent(call("lookup_order", {"order_id": "A-1"}), say("It shipped."))
    result = await run_agent(monitor, agent, "where is A-1?", agent_id="support")
    assert result.final_output == "It shipped."
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
    assert {e["agent_id"] for e in monitor.events} == {"support"}
    llm = monitor.of("llm_call")
    assert [(e["model"], e["prompt_tokens"], e["completion_tokens"]) for e in llm] == [
        ("scripted-model", 120, 30)
    ] * 2
    assert stages(monitor) == [("lookup_order", s) for s in SIX_STAGES]
    received = next(e for e in monitor.of("tool_call") if e["tool_stage"] == "response_received")
    assert received["output_summary"] == "order A-1: shipped"
    invoked = next(e for e in monitor.of("tool_call") if e["tool_stage"] == "invoked")
    assert invoked["tool_args_hash"]  # the SDK's JSON arguments, canonicalised
    assert monitor.of("task_end")[0]["status"] == "ok"


async def test_the_processor_alone_records_each_trace_as_a_task() -> None:
    recording = RecordingMonitor()
    processor = TrcTracingProcessor(recording, "support")
    set_trace_processors([processor])
    try:
        agent = support_agent(say("hello"))
        await Runner.run(agent, "hi", hooks=TrcRunHooks(processor))
        await Runner.run(agent.clone(model=ScriptedModel([say("again")])), "hi")
    finally:
        set_trace_processors([])
    assert len(recording.of("task_start")) == 2
    assert [e["status"] for e in recording.of("task_end")] == ["ok", "ok"]
    assert {e["agent_id"] for e in recording.events} == {"support"}


async def test_run_agent_is_cancelled_by_a_kill_and_raises_agent_killed(
    monitor: RecordingMonitor,
) -> None:
    calls: list[str] = []

    @function_tool
    def search(query: str) -> str:
        """Search."""
        calls.append(query)
        if len(calls) == 2:
            monitor.kill(monitor.runs[0])
        return "same"

    agent = Agent(
        name="Looper",
        model=ScriptedModel([call("search", {"query": "q"})], repeat_last=True),
        tools=[search],
    )
    with pytest.raises(AgentKilled, match="test kill"):
        await run_agent(monitor, agent, "go", agent_id="looper")
    assert calls == ["q", "q"]
    assert monitor.of("task_end")[0]["status"] == "killed"
    assert len(monitor.of("control_ack")) == 1
    assert not monitor.of("error")


async def test_the_hooks_stop_a_run_the_processor_opened() -> None:
    recording = RecordingMonitor()
    processor = TrcTracingProcessor(recording, "looper")
    set_trace_processors([processor])
    calls: list[str] = []

    @function_tool
    def search(query: str) -> str:
        """Search."""
        calls.append(query)
        recording.kill(recording.runs[0])
        return "same"

    agent = Agent(
        name="Looper",
        model=ScriptedModel([call("search", {"query": "q"})], repeat_last=True),
        tools=[search],
    )
    try:
        with pytest.raises(AgentKilled):
            await Runner.run(agent, "go", hooks=TrcRunHooks(processor))
    finally:
        set_trace_processors([])
    assert calls == ["q"]
    assert recording.of("task_end")[0]["status"] == "killed"


async def test_a_handoff_starts_a_subagent_in_the_chain(monitor: RecordingMonitor) -> None:
    billing = Agent(
        name="Billing Desk",
        model=ScriptedModel([call("lookup_order", {"order_id": "B-2"}), say("refunded")]),
        tools=[lookup_order],
    )
    support = Agent(
        name="Support",
        model=ScriptedModel([call(handoff(billing).tool_name)]),
        handoffs=[billing],
    )
    result = await run_agent(monitor, support, "refund", agent_id="support")
    assert result.final_output == "refunded"

    root = monitor.of("task_start", "support")[0]
    child = [e for e in monitor.events if e["agent_id"] == "Billing-Desk"]
    assert child[0]["event_type"] == "task_start" and child[-1]["event_type"] == "task_end"
    assert {e["parent_task_id"] for e in child} == {root["task_id"]}
    assert {e["correlation_id"] for e in child} == {root["task_id"]}
    assert monitor.of("subagent_spawn", "support")
    handoffs = [e for e in monitor.of("tool_call", "support") if e["tool_name"] == "handoff"]
    assert len(handoffs) == 1 and handoffs[0]["tool_args_hash"]
    assert stages(monitor, "Billing-Desk") == [("lookup_order", s) for s in SIX_STAGES]


async def test_a_tripped_guardrail_is_a_failed_guardrail_call(monitor: RecordingMonitor) -> None:
    @input_guardrail
    def no_refunds(
        context: RunContextWrapper[Any], agent: Agent[Any], text: Any
    ) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered="refund" in str(text))

    agent = Agent(name="Support", model=ScriptedModel([say("ok")]), input_guardrails=[no_refunds])
    with pytest.raises(InputGuardrailTripwireTriggered):
        await run_agent(monitor, agent, "refund please", agent_id="guarded")
    guard = [e for e in monitor.of("tool_call") if e["tool_name"] == "guardrail.no_refunds"]
    assert [e["status"] for e in guard] == ["error"]
    assert monitor.of("task_end")[0]["status"] == "error"


async def test_a_paused_run_waits_without_blocking_the_loop_until_resumed(
    monitor: RecordingMonitor,
) -> None:
    agent = support_agent(call("lookup_order", {"order_id": "A-1"}), say("done"), latency_s=0.2)
    run_task = asyncio.create_task(run_agent(monitor, agent, "go", agent_id="pausable"))

    async def until(condition: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, f"{what} did not happen within 10 s"
            await asyncio.sleep(0.01)

    await until(lambda: monitor.runs, "the run's start")
    run = monitor.runs[0]
    run.apply(dict(kill_command(run.task_id), kind="PAUSE", command_id="p1"))
    await until(
        lambda: any(e["status"] == "paused" for e in monitor.of("control_ack")), "the pause"
    )
    assert not run_task.done()
    invoked_while_paused = len([s for _, s in stages(monitor) if s == "invoked"])
    run.apply(dict(kill_command(run.task_id), kind="RESUME", command_id="r1"))
    result = await asyncio.wait_for(run_task, 10)
    assert result.final_output == "done"
    assert invoked_while_paused == 0, "paused at the end of the first model call"
    assert monitor.of("task_end")[0]["status"] == "ok"


async def test_run_agent_chains_the_callers_hooks(monitor: RecordingMonitor) -> None:
    seen: list[str] = []

    class Mine(RunHooks[Any]):
        async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
            seen.append(tool.name)

    agent = support_agent(call("lookup_order", {"order_id": "A-1"}), say("done"))
    await run_agent(monitor, agent, "go", agent_id="hooked", hooks=Mine())
    assert seen == ["lookup_order"]


async def test_tool_calls_are_journaled_with_parsed_arguments_for_rollback(
    monitor: RecordingMonitor,
) -> None:
    registry.register("lookup_order", kind="read")
    try:
        agent = support_agent(call("lookup_order", {"order_id": "A-1"}), say("done"))
        await run_agent(monitor, agent, "go", agent_id="journaled")
        [action] = monitor.runs[0].actions
        assert action.spec.kind == "read" and action.args == {"order_id": "A-1"}
        assert action.result == "order A-1: shipped" and action.status == "ok"
    finally:
        registry.unregister("lookup_order")


async def test_a_processor_left_out_of_the_sdk_says_so(
    monitor: RecordingMonitor, caplog: pytest.LogCaptureFixture
) -> None:
    set_trace_processors([])  # e.g. the app replaced every processor after the first run
    await run_agent(monitor, support_agent(say("hi")), "go", agent_id="unrecorded")
    assert "not among the Agents SDK's trace processors" in caplog.text


@pytest.mark.parametrize("with_hooks", [True, False])
async def test_different_arguments_are_different_calls(with_hooks: bool) -> None:
    """The SDK sets a function span's input after the span starts: it must still count."""
    recording = RecordingMonitor()
    processor = TrcTracingProcessor(recording, "support")
    set_trace_processors([processor])
    agent = support_agent(
        call("lookup_order", {"order_id": "A-1"}),
        call("lookup_order", {"order_id": "B-2"}),
        say("done"),
    )
    try:
        await Runner.run(agent, "go", hooks=TrcRunHooks(processor) if with_hooks else None)
    finally:
        set_trace_processors([])
    invoked = [e for e in recording.of("tool_call") if e["tool_stage"] == "invoked"]
    assert len(invoked) == 2
    assert invoked[0]["tool_args_hash"] != invoked[1]["tool_args_hash"]
    assert [s for _, s in stages(recording)] == SIX_STAGES * 2
    assert [a.args for a in recording.runs[0].actions] == [{"order_id": "A-1"}, {"order_id": "B-2"}]
