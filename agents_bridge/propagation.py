"""Correlation across threads, asyncio tasks and processes.

The run being executed is a context variable, so asyncio tasks created inside
it inherit it, and a sub-agent started there joins the same correlation chain
with its parent linked. Threads do not inherit context variables: start them
through :func:`in_context`. Across processes, :func:`carrier` gives the headers
to send along (HTTP or Kafka headers) and ``Monitor.run(carrier=...)`` picks
them up on the other side.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

__all__ = ["RunContext", "carrier", "current", "from_carrier", "in_context"]

P = ParamSpec("P")
T = TypeVar("T")

CORRELATION_HEADER = "trc-correlation-id"
PARENT_AGENT_HEADER = "trc-parent-agent-id"
PARENT_TASK_HEADER = "trc-parent-task-id"


@dataclass(frozen=True)
class RunContext:
    """What a child run needs from its parent."""

    agent_id: str
    task_id: str
    correlation_id: str


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "trc_current_run", default=None
)


def current() -> RunContext | None:
    """The run being executed in this context, if any."""
    return _current.get()


def enter(context: RunContext) -> contextvars.Token[RunContext | None]:
    return _current.set(context)


def leave(token: contextvars.Token[RunContext | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:
        _current.set(None)  # left from another context (e.g. another task): just clear


def carrier(context: RunContext) -> dict[str, str]:
    """Headers that make a run in another process a child of ``context``."""
    return {
        CORRELATION_HEADER: context.correlation_id,
        PARENT_AGENT_HEADER: context.agent_id,
        PARENT_TASK_HEADER: context.task_id,
    }


def from_carrier(headers: Mapping[str, str | bytes]) -> RunContext | None:
    """The parent described by ``headers`` (case-insensitive; bytes values accepted)."""
    found = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
    try:
        return RunContext(
            agent_id=found[PARENT_AGENT_HEADER],
            task_id=found[PARENT_TASK_HEADER],
            correlation_id=found[CORRELATION_HEADER],
        )
    except KeyError:
        return None


def in_context(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` bound to a copy of the caller's context: pass it to ``threading.Thread``."""
    context = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return context.run(fn, *args, **kwargs)

    return run
