"""A scripted OpenAI Agents SDK model: offline runs for tests, examples and benchmarks.

It implements the SDK's own :class:`agents.Model` interface and, like the SDK's
model adapters, reports each call in a ``generation`` span with token usage, so
an agent runs exactly as it would against a real model, with no network or key::

    model = ScriptedModel([call("kb_search", {"query": "refund"}), say("Refunds take 5 days.")])
    agent = Agent(name="support", model=model, tools=[kb_search])

A turn is a list of output items; :func:`call` makes a tool call (a handoff is a
call of ``transfer_to_<agent name>``), :func:`say` a final message. After the
script ends the model repeats its last turn (``repeat_last=True``), which makes
a looping agent; otherwise it raises.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agents_bridge.integrations._support import missing_extra

try:
    from agents import Model, ModelResponse, ModelSettings, ModelTracing, Tool, Usage
    from agents.agent_output import AgentOutputSchemaBase
    from agents.handoffs import Handoff
    from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
    from agents.tracing import generation_span
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )
    from openai.types.responses.response_prompt_param import ResponsePromptParam
except ImportError as exc:  # pragma: no cover - exercised by the missing-extra test
    raise missing_extra("scripted_model", "openai-agents", exc) from exc

__all__ = ["ScriptedModel", "call", "say"]

_ids = itertools.count(1)


def call(tool: str, arguments: dict[str, Any] | None = None) -> TResponseOutputItem:
    """A model output item that calls ``tool`` with ``arguments``."""
    n = next(_ids)
    return ResponseFunctionToolCall(
        type="function_call",
        id=f"fc_{n}",
        call_id=f"call_{n}",
        name=tool,
        arguments=json.dumps(arguments or {}),
    )


def say(text: str) -> TResponseOutputItem:
    """A model output item: the final assistant message ``text``."""
    return ResponseOutputMessage(
        type="message",
        id=f"msg_{next(_ids)}",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


class ScriptedModel(Model):
    """Answers each model call with the next scripted turn, after ``latency_s``.

    Every call reports ``prompt_tokens`` and ``completion_tokens`` of usage.
    Turns may be item lists or single items; a turn that is a callable
    ``(input) -> items`` computes its answer from the conversation so far.
    """

    def __init__(
        self,
        turns: Sequence[Any],
        *,
        name: str = "scripted-model",
        latency_s: float = 0.0,
        prompt_tokens: int = 120,
        completion_tokens: int = 30,
        repeat_last: bool = False,
    ) -> None:
        if not turns:
            raise ValueError("a scripted model needs at least one turn")
        self.name = name
        self.latency_s = latency_s
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.repeat_last = repeat_last
        self._turns = list(turns)
        self.calls = 0

    def _next_turn(self, input: str | list[TResponseInputItem]) -> list[TResponseOutputItem]:
        if self.calls >= len(self._turns) and not self.repeat_last:
            raise RuntimeError(f"the script has only {len(self._turns)} turns")
        turn = self._turns[min(self.calls, len(self._turns) - 1)]
        self.calls += 1
        if callable(turn):
            turn = turn(input)
        items = turn if isinstance(turn, list | tuple) else [turn]
        # Fresh call ids each time, so a repeated turn is a new tool call.
        return [
            item.model_copy(update={"call_id": f"call_{next(_ids)}"})
            if isinstance(item, ResponseFunctionToolCall)
            else item
            for item in items
        ]

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        usage = {"input_tokens": self.prompt_tokens, "output_tokens": self.completion_tokens}
        with generation_span(model=self.name, disabled=tracing.is_disabled()) as span:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)  # a KILL cancels the run right here
            output = self._next_turn(input)
            span.span_data.usage = usage
        return ModelResponse(
            output=output,
            usage=Usage(
                requests=1,
                input_tokens=self.prompt_tokens,
                output_tokens=self.completion_tokens,
                total_tokens=self.prompt_tokens + self.completion_tokens,
            ),
            response_id=None,
        )

    def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("the scripted model answers with Runner.run, not streaming")
