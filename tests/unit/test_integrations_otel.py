"""OpenTelemetry span processor: a real SDK TracerProvider, GenAI spans, events into a list."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode, Tracer

from agents_bridge import AgentKilled
from agents_bridge.integrations.otel import TrcSpanProcessor
from tests.unit.events import SIX_STAGES
from tests.unit.test_integrations import RecordingMonitor, stages


def traced(**options: object) -> tuple[RecordingMonitor, TrcSpanProcessor, Tracer]:
    monitor = RecordingMonitor()
    processor = TrcSpanProcessor(monitor, "otel-agent", **options)  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return monitor, processor, provider.get_tracer("genai-library")


def chat(tracer: Tracer, model: str = "gpt-4o", tokens: tuple[int, int] = (100, 20)) -> None:
    with tracer.start_as_current_span(
        f"chat {model}", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
    ) as span:
        span.set_attribute("gen_ai.response.model", f"{model}-2024")
        span.set_attribute("gen_ai.usage.input_tokens", tokens[0])
        span.set_attribute("gen_ai.usage.output_tokens", tokens[1])


def execute_tool(tracer: Tracer, name: str, arguments: str, result: str = "ok") -> None:
    with tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.arguments": arguments,
        },
    ) as span:
        span.set_attribute("gen_ai.tool.call.result", result)


def invoke_agent(tracer: Tracer, name: str | None) -> object:
    attributes = {"gen_ai.operation.name": "invoke_agent"}
    if name:
        attributes["gen_ai.agent.name"] = name
    return tracer.start_as_current_span(f"invoke_agent {name}", attributes=attributes)


def test_an_agent_span_is_a_task_with_steps_llm_calls_and_tool_stages() -> None:
    monitor, _, tracer = traced()
    with invoke_agent(tracer, "Support Bot"):
        chat(tracer)
        execute_tool(tracer, "kb_search", '{"query": "refund"}', "3 hits")
        chat(tracer, tokens=(300, 10))
    assert monitor.types() == [
        "task_start",
        "step_start",
        "llm_call",
        *["tool_call"] * 5,
        "tool_call",  # reasoning re-entered when the next model call starts
        "step_end",
        "step_start",
        "llm_call",
        "step_end",
        "task_end",
    ]
    assert {e["agent_id"] for e in monitor.events} == {"Support-Bot"}
    llm = monitor.of("llm_call")
    assert [(e["model"], e["prompt_tokens"], e["completion_tokens"]) for e in llm] == [
        ("gpt-4o-2024", 100, 20),
        ("gpt-4o-2024", 300, 10),
    ]
    assert all(e["duration_ms"] is not None for e in llm)
    assert [e["action"] for e in monitor.of("step_start")] == ["gpt-4o", "gpt-4o"]
    assert stages(monitor) == [("kb_search", s) for s in SIX_STAGES]
    received = next(e for e in monitor.of("tool_call") if e["tool_stage"] == "response_received")
    assert received["output_summary"] == "3 hits"
    invoked = next(e for e in monitor.of("tool_call") if e["tool_stage"] == "invoked")
    assert invoked["tool_args_hash"]
    assert monitor.of("task_end")[0]["status"] == "ok"


def test_a_nested_agent_span_is_a_subagent_in_the_chain() -> None:
    monitor, _, tracer = traced()
    with invoke_agent(tracer, "planner"):
        chat(tracer)
        with invoke_agent(tracer, "researcher"):
            execute_tool(tracer, "web_search", '{"q": "kafka"}')
    planner = monitor.of("task_start", "planner")[0]
    researcher = monitor.of("task_start", "researcher")[0]
    assert researcher["parent_task_id"] == planner["task_id"]
    assert researcher["parent_agent_id"] == "planner"
    assert researcher["correlation_id"] == planner["task_id"]
    assert monitor.of("subagent_spawn", "planner")
    assert stages(monitor, "researcher")[0] == ("web_search", "selected")


def test_genai_spans_outside_an_agent_span_are_one_task_per_trace() -> None:
    monitor, _, tracer = traced(name_from_spans=False)
    with tracer.start_as_current_span("handle_request"):  # the app's own, non-GenAI span
        chat(tracer)
        execute_tool(tracer, "calc", '{"x": 1}')
        chat(tracer)
        assert not monitor.of("task_end")
    assert len(monitor.of("task_start")) == 1
    assert monitor.of("task_end")[0]["status"] == "ok"
    assert {e["agent_id"] for e in monitor.events} == {"otel-agent"}
    chat(tracer)  # a new trace whose root is the model call itself: its own task
    assert len(monitor.of("task_start")) == 2 and len(monitor.of("task_end")) == 2


def test_legacy_token_attributes_and_errors() -> None:
    monitor, _, tracer = traced()
    with (
        invoke_agent(tracer, "a"),
        tracer.start_as_current_span(
            "text_completion",
            attributes={
                "gen_ai.operation.name": "text_completion",
                "gen_ai.request.model": "old",
                "gen_ai.usage.prompt_tokens": 7,
                "gen_ai.usage.completion_tokens": 3,
            },
        ) as span,
    ):
        span.set_attribute("error.type", "RateLimitError")
        span.set_status(Status(StatusCode.ERROR, "slow down"))
    assert [(e["prompt_tokens"], e["completion_tokens"]) for e in monitor.of("llm_call")] == [
        (7, 3)
    ]
    assert [e["error_message"] for e in monitor.of("error")] == ["RateLimitError: slow down"]
    assert monitor.of("step_end")[0]["status"] == "error"


def test_a_tool_named_only_at_the_end_is_one_whole_call() -> None:
    monitor, _, tracer = traced()
    with invoke_agent(tracer, "a"):
        with tracer.start_as_current_span(
            "execute_tool", attributes={"gen_ai.operation.name": "execute_tool"}
        ) as span:
            span.set_attribute("gen_ai.tool.name", "late")
        chat(tracer)
    assert [s for n, s in stages(monitor) if n == "late"] == SIX_STAGES


def test_a_killed_run_stops_at_its_next_genai_span() -> None:
    monitor, _, tracer = traced()
    started: list[int] = []
    with pytest.raises(AgentKilled), invoke_agent(tracer, "looper"):
        for _ in range(10):
            chat(tracer)
            execute_tool(tracer, "search", '{"q": "same"}')
            started.append(1)
            if len(started) == 2:
                monitor.kill(monitor.runs[0])
    assert len(started) == 2
    assert monitor.of("task_end")[0]["status"] == "killed"
    assert len(monitor.of("control_ack")) == 1
    assert not monitor.of("error")


def test_halt_on_start_off_only_records() -> None:
    monitor, _, tracer = traced(halt_on_start=False)
    with invoke_agent(tracer, "a"):
        monitor.kill(monitor.runs[0])
        chat(tracer)
    assert monitor.of("llm_call")


def test_shutdown_closes_runs_left_open() -> None:
    monitor, processor, tracer = traced()
    span = tracer.start_span("invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent"})
    assert monitor.of("task_start") and not monitor.of("task_end")
    processor.shutdown()
    assert monitor.of("task_end")
    span.end()


def test_tool_arguments_given_as_json_are_journaled_as_a_dict() -> None:
    monitor, _, tracer = traced()
    with invoke_agent(tracer, "a"):
        execute_tool(tracer, "create_file", '{"path": "/tmp/x"}', "created")
    [action] = monitor.runs[0].actions
    assert action.args == {"path": "/tmp/x"} and action.result == "created"


def test_arguments_set_after_the_span_started_still_reach_the_invoked_stage() -> None:
    monitor, _, tracer = traced()
    with invoke_agent(tracer, "a"):
        for query in ("kafka", "avro"):
            with tracer.start_as_current_span(
                "execute_tool",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "s"},
            ) as span:
                span.set_attribute("gen_ai.tool.call.arguments", json.dumps({"q": query}))
    invoked = [e for e in monitor.of("tool_call") if e["tool_stage"] == "invoked"]
    assert len(invoked) == 2
    assert invoked[0]["tool_args_hash"] != invoked[1]["tool_args_hash"]
    # Reasoning re-enters (for both) when the agent ends: no model call came between them.
    assert sorted(s for _, s in stages(monitor)) == sorted(SIX_STAGES * 2)
