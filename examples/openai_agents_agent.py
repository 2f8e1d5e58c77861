"""An OpenAI Agents SDK support agent that hands off to billing, monitored and killable.

Offline: the agents run on a scripted model (the SDK's own ``Model`` interface,
with a model's latency), so no key and no network are needed. Healthy, the
support agent hands off to the billing agent (a sub-agent in the same chain),
which looks the order up and answers; with ``--loop`` the billing agent looks
the same order up until the detection engine kills the run::

    TRC_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/openai_agents_agent.py [--loop]

(with ``trc broker`` and ``trc worker`` running). Exit status 0: the healthy
run answered, or the looping one was killed before its 4th equivalent call.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from agents import Agent, MaxTurnsExceeded, function_tool, handoff, set_trace_processors

from agents_bridge import AgentKilled, Monitor
from agents_bridge.actions import registry
from agents_bridge.integrations.openai_agents import processor_for, run_agent
from agents_bridge.integrations.scripted_model import ScriptedModel, call, say

MODEL_LATENCY_S = 0.3
MAX_TURNS = 12
calls: list[str] = []


@function_tool
def lookup_order(order_id: str) -> str:
    """Look an order up in the billing system."""
    calls.append(order_id)
    return f"order {order_id}: refund issued on Monday"


def build_agents(loop: bool = False) -> Agent[None]:
    """The support agent (the entry point) and the billing agent it hands off to."""
    lookup = call("lookup_order", {"order_id": "A-1042"})
    billing = Agent[None](
        name="Billing",
        instructions="Answer billing questions.",
        model=ScriptedModel(
            [lookup] if loop else [lookup, say("Your refund was issued on Monday.")],
            repeat_last=loop,
            latency_s=MODEL_LATENCY_S,
        ),
        tools=[lookup_order],
    )
    return Agent[None](
        name="Support",
        instructions="Route billing questions to billing.",
        model=ScriptedModel([call(handoff(billing).tool_name)], latency_s=MODEL_LATENCY_S),
        handoffs=[billing],
    )


async def run_example(monitor: Monitor, agent_id: str, *, loop: bool = False) -> str:
    """Run the agents once; the answer, or how the run was stopped."""
    registry.register("lookup_order", kind="read")
    try:
        result = await run_agent(  # the one line
            monitor, build_agents(loop), "Where is my refund?", agent_id=agent_id,
            max_turns=MAX_TURNS,
        )  # fmt: skip
    except AgentKilled as killed:
        return f"killed after {len(calls)} lookups: {killed}"
    except MaxTurnsExceeded:
        return f"not killed after {len(calls)} lookups (is `trc worker` running?)"
    return str(result.final_output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", action="store_true", help="loop until killed")
    args = parser.parse_args()
    agent_id = f"openai-support-{uuid.uuid4().hex[:6]}"
    with Monitor() as monitor:
        set_trace_processors([processor_for(monitor)])  # ours only: nothing is sent to OpenAI
        outcome = asyncio.run(run_example(monitor, agent_id, loop=args.loop))
    print(f"{agent_id}: {outcome}")
    if args.loop:
        return 0 if outcome.startswith("killed") and len(calls) <= 3 else 1
    return 0 if not outcome.startswith(("killed", "not killed")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
