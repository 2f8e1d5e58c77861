"""A plain-Python agent: decorators for the agent, its steps and its tools.

No framework: ``@agent`` makes each call one monitored task, ``@step`` and
``@tool`` record steps and six-stage tool calls, and a KILL cancels the agent
(an ``async def``) at once. Offline: the "model" is a scripted coroutine with a
model's latency::

    TRC_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/plain_agent.py [--loop]

(with ``trc broker`` and ``trc worker`` running). Exit status 0: the healthy
agent answered, or the looping one was killed before its 4th equivalent call.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable

from agents_bridge import AgentKilled, Monitor
from agents_bridge.actions import action
from agents_bridge.integrations.plain import agent, step, tool

MODEL_LATENCY_S = 0.3
MAX_TURNS = 12
calls: list[str] = []
drafts: dict[str, str] = {}


@tool
@action("read")
async def fetch(url: str) -> str:
    """Fetch a page."""
    calls.append(url)
    return f"<html>{url}</html>"


@tool
@action("write", compensate=lambda args, result: drafts.pop(args["name"], None))
def save_draft(name: str, text: str) -> str:
    """Save a draft (undone by a ROLLBACK)."""
    drafts[name] = text
    return name


async def decide(turn: int, loop: bool) -> str | None:
    """The scripted model: the next URL to fetch, or None when done."""
    await asyncio.sleep(MODEL_LATENCY_S)
    pages = ["https://example.com/pricing", "https://example.com/faq"]
    if loop:
        return pages[0]
    return pages[turn] if turn < len(pages) else None


def build_agent(
    monitor: Monitor, agent_id: str, *, loop: bool = False
) -> Callable[[], Awaitable[str]]:
    @agent(monitor, agent_id)
    async def crawler() -> str:
        for turn in range(MAX_TURNS):
            async with step("decide", context=f"turn {turn}") as current:
                url = await decide(turn, loop)
                current.output = url
            if url is None:
                save_draft("summary", "pricing and FAQ read")
                return "Read pricing and FAQ; summary drafted."
            await fetch(url)
        return f"not killed after {len(calls)} fetches (is `trc worker` running?)"

    return crawler


async def run_example(monitor: Monitor, agent_id: str, *, loop: bool = False) -> str:
    """Run the agent once; its answer, or how it was stopped."""
    crawler = build_agent(monitor, agent_id, loop=loop)
    try:
        return await crawler()
    except AgentKilled as killed:
        return f"killed after {len(calls)} fetches: {killed}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", action="store_true", help="loop until killed")
    args = parser.parse_args()
    agent_id = f"plain-crawler-{uuid.uuid4().hex[:6]}"
    with Monitor() as monitor:
        outcome = asyncio.run(run_example(monitor, agent_id, loop=args.loop))
    print(f"{agent_id}: {outcome}")
    if args.loop:
        return 0 if outcome.startswith("killed") and len(calls) <= 3 else 1
    return 0 if not outcome.startswith(("killed", "not killed")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
