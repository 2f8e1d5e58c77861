"""A LangGraph ReAct support agent, monitored and killable with one line.

Offline: LangChain's own scripted chat model answers, with a model's latency.
Healthy, it searches the knowledge base twice and answers; with ``--loop`` it
repeats the same search until the detection engine kills it::

    TRC_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/langgraph_agent.py [--loop]

(with ``trc broker`` and ``trc worker`` running). Exit status 0: the healthy
agent answered, or the looping one was killed before its 4th equivalent call.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.tools import tool
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from agents_bridge import AgentKilled, Monitor
from agents_bridge.integrations.langchain import instrument, register_tools

MODEL_LATENCY_S = 0.3
calls: list[str] = []


@tool
def kb_search(query: str) -> str:
    """Search the support knowledge base."""
    calls.append(query)
    return f"3 articles about {query}"


class ScriptedChatModel(GenericFakeChatModel):
    """LangChain's fake chat model with a real model's latency."""

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


def _search(query: str, n: int) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[{"name": "kb_search", "args": {"query": query}, "id": f"call-{n}"}],
        usage_metadata={"input_tokens": 400 + 50 * n, "output_tokens": 40, "total_tokens": 0},
    )


def script(loop: bool) -> Iterator[AIMessage]:
    if loop:  # the same search forever: a reasoning loop
        return (_search("refund policy", n) for n in itertools.count())
    answer = AIMessage(
        content="Refunds take 5 business days.",
        usage_metadata={"input_tokens": 600, "output_tokens": 25, "total_tokens": 625},
    )
    return iter([_search("refund policy", 0), _search("refund timeline", 1), answer])


def build_graph(loop: bool = False) -> Any:
    """A ReAct graph: the model node, a tool node, and the usual conditional edge."""
    model = ScriptedChatModel(messages=script(loop))

    async def think(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", think)
    builder.add_node("tools", ToolNode([kb_search]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


async def run_example(monitor: Monitor, agent_id: str, *, loop: bool = False) -> str:
    """Run the agent once; its answer, or how it was stopped."""
    register_tools([kb_search], kind="read")
    graph = instrument(build_graph(loop), monitor, agent_id, asynchronous=True)  # the one line
    try:
        result = await graph.ainvoke(
            {"messages": [("user", "How long do refunds take?")]}, {"recursion_limit": 40}
        )
    except AgentKilled as killed:
        return f"killed after {len(calls)} searches: {killed}"
    except GraphRecursionError:
        return f"not killed after {len(calls)} searches (is `trc worker` running?)"
    return str(result["messages"][-1].content)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", action="store_true", help="loop until killed")
    args = parser.parse_args()
    agent_id = f"langgraph-support-{uuid.uuid4().hex[:6]}"
    with Monitor() as monitor:
        outcome = asyncio.run(run_example(monitor, agent_id, loop=args.loop))
    print(f"{agent_id}: {outcome}")
    if args.loop:
        return 0 if outcome.startswith("killed") and len(calls) <= 3 else 1
    return 0 if not outcome.startswith(("killed", "not killed")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
