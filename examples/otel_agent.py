"""An agent instrumented with OpenTelemetry GenAI spans, monitored with no code change.

The agent below knows nothing about Total Runtime Control: it only emits spans
that follow the GenAI semantic conventions (as OpenTelemetry-instrumented
model and agent libraries do). Registering :class:`TrcSpanProcessor` on the
tracer provider is the whole integration; a KILL stops the agent at the start
of its next model or tool span. Offline: the "model" is a scripted coroutine
with a model's latency::

    TRC_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/otel_agent.py [--loop]

(with ``trc broker`` and ``trc worker`` running). Exit status 0: the healthy
agent answered, or the looping one was killed before its 4th equivalent call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from agents_bridge import AgentKilled, Monitor
from agents_bridge.integrations.otel import TrcSpanProcessor

MODEL_LATENCY_S = 0.3
MAX_TURNS = 12
calls: list[str] = []


async def model(turn: int, loop: bool) -> tuple[str | None, dict[str, str], int]:
    """The scripted model: (tool to call or None, its arguments, prompt tokens)."""
    await asyncio.sleep(MODEL_LATENCY_S)
    plan = [("web_search", {"q": "kafka exactly once"}), ("web_search", {"q": "kraft mode"})]
    if loop:
        return "web_search", {"q": "kafka exactly once"}, 500 + 40 * turn
    if turn < len(plan):
        return plan[turn][0], plan[turn][1], 500 + 40 * turn
    return None, {}, 700


async def research_agent(tracer: Tracer, *, loop: bool = False) -> str:
    """A tiny agent loop that emits GenAI spans, as instrumented libraries do."""
    with tracer.start_as_current_span(
        "invoke_agent researcher",
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher"},
    ):
        for turn in range(MAX_TURNS):
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"},
            ) as span:
                tool, arguments, prompt_tokens = await model(turn, loop)
                span.set_attribute("gen_ai.usage.input_tokens", prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", 60)
            if tool is None:
                return "Kafka gives exactly-once with idempotent producers and transactions."
            with tracer.start_as_current_span(
                f"execute_tool {tool}",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "gen_ai.tool.call.arguments": json.dumps(arguments),
                },
            ) as span:
                calls.append(arguments["q"])
                span.set_attribute("gen_ai.tool.call.result", f"5 results for {arguments['q']}")
    return f"not killed after {len(calls)} searches (is `trc worker` running?)"


async def run_example(monitor: Monitor, agent_id: str, *, loop: bool = False) -> str:
    """Run the agent once; its answer, or how it was stopped."""
    provider = TracerProvider()
    provider.add_span_processor(TrcSpanProcessor(monitor, agent_id, name_from_spans=False))
    try:
        return await research_agent(provider.get_tracer("my-agent-library"), loop=loop)
    except AgentKilled as killed:
        return f"killed after {len(calls)} searches: {killed}"
    finally:
        provider.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", action="store_true", help="loop until killed")
    args = parser.parse_args()
    agent_id = f"otel-researcher-{uuid.uuid4().hex[:6]}"
    with Monitor() as monitor:
        outcome = asyncio.run(run_example(monitor, agent_id, loop=args.loop))
    print(f"{agent_id}: {outcome}")
    if args.loop:
        return 0 if outcome.startswith("killed") and len(calls) <= 3 else 1
    return 0 if not outcome.startswith(("killed", "not killed")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
