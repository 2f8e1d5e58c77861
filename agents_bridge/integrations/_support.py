"""What every integration shares: runs it opens itself, ids, summaries, missing extras."""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from agents_bridge import propagation
from agents_bridge.run import AgentRun

__all__ = [
    "OwnedRun",
    "RunFactory",
    "agent_id_from",
    "json_arguments",
    "missing_extra",
    "summarize",
]

_NOT_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
SUMMARY_CHARS = 200


class RunFactory(Protocol):
    """What opens runs: a :class:`~agents_bridge.Monitor` (or a test double of one)."""

    def run(
        self,
        agent_id: str,
        *,
        agent_type: str | None = None,
        task_id: str | None = None,
        correlation_id: str | None = None,
        parent_agent_id: str | None = None,
        parent_task_id: str | None = None,
        carrier: Mapping[str, str | bytes] | None = None,
    ) -> AgentRun: ...


def missing_extra(module: str, extra: str, exc: ImportError) -> ImportError:
    """The error raised when ``module`` is imported without its optional extra."""
    return ImportError(
        f"agents_bridge.integrations.{module} needs the [{extra}] extra "
        f"({exc.name or exc} is not installed): "
        f"pip install 'total-runtime-control[{extra}]'"
    )


def agent_id_from(name: str, fallback: str = "agent") -> str:
    """A topic-safe agent id made from a framework's agent name ("Support Bot" -> "Support-Bot")."""
    cleaned = _NOT_TOPIC_SAFE.sub("-", name).strip("-.")[:200]
    return cleaned or fallback


def json_arguments(raw: Any) -> Any:
    """Tool arguments given as JSON text, parsed (compensations get a dict); else as given."""
    if isinstance(raw, str | bytes):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def summarize(value: Any, limit: int = SUMMARY_CHARS) -> str | None:
    """A short text for an output summary; the input guard redacts and bounds it again."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OwnedRun:
    """A run an integration opens and closes itself, from framework callbacks.

    ``isolated`` keeps the correlation context variable the run sets out of the
    caller's context (callbacks of one run may arrive in several contexts); a
    ``parent`` makes the run a sub-agent of that run, with a ``subagent_spawn``
    event from the parent when the factory is a monitor.
    """

    def __init__(
        self,
        factory: RunFactory,
        agent_id: str,
        *,
        agent_type: str | None = None,
        task_id: str | None = None,
        parent: AgentRun | None = None,
        isolated: bool = False,
    ) -> None:
        self._context = contextvars.copy_context() if isolated or parent else None

        def start() -> AgentRun:
            if parent is not None:
                propagation.enter(parent.context)
            run = factory.run(agent_id, agent_type=agent_type, task_id=task_id)
            run.__enter__()
            return run

        self.run = self._context.run(start) if self._context is not None else start()
        self._finished = False

    def finish(self, exc: BaseException | None = None) -> None:
        """Emit task_end (status from ``exc`` and a kill); idempotent."""
        if self._finished:
            return
        self._finished = True
        args = (type(exc), exc, exc.__traceback__) if exc is not None else (None, None, None)
        if self._context is not None:
            self._context.run(self.run.__exit__, *args)
        else:
            self.run.__exit__(*args)
