"""Plain Python agents: decorators and context managers for agents, steps and tools.

::

    @agent(monitor, "researcher")           # each call is one task of "researcher"
    async def research(question: str) -> str:
        async with step("plan"):            # or @step("plan") on a function
            ...
        return await search(question)

    @tool                                   # six tool stages per call; kill boundary
    async def search(query: str) -> str: ...

Sync and async functions are both supported. ``@agent`` on an ``async def``
binds the run to the calling asyncio task, so a KILL cancels it at once;
everywhere else :class:`~agents_bridge.AgentKilled` is raised at the next step
or tool boundary. An ``@agent`` called inside another one is its sub-agent (same
correlation chain, parent links). :func:`current_run` gives the run in force,
and :func:`use_run` makes a run you opened yourself the one steps and tools use.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from agents_bridge.integrations._support import RunFactory, summarize
from agents_bridge.run import AgentRun

__all__ = ["agent", "current_run", "step", "tool", "use_run"]

P = ParamSpec("P")
T = TypeVar("T")

_current: contextvars.ContextVar[AgentRun | None] = contextvars.ContextVar(
    "trc_plain_run", default=None
)


def current_run() -> AgentRun:
    """The run that steps and tools in this context record into."""
    run = _current.get()
    if run is None:
        raise LookupError(
            "no agent run here: call this inside a function decorated with @agent(monitor, ...)"
            " or inside `with use_run(run):`"
        )
    return run


@contextlib.contextmanager
def use_run(run: AgentRun) -> Iterator[AgentRun]:
    """Make ``run`` the one :func:`step` and :func:`tool` use in this block."""
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


def agent(
    monitor: RunFactory, agent_id: str, *, agent_type: str | None = None
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Each call of the decorated function is one task of ``agent_id``."""

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with monitor.run(agent_id, agent_type=agent_type) as run:
                    with use_run(run):
                        return await fn(*args, **kwargs)

            return cast(Callable[P, T], run_async)

        @functools.wraps(fn)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> T:
            with monitor.run(agent_id, agent_type=agent_type) as run, use_run(run):
                return fn(*args, **kwargs)

        return run_sync

    return decorate


class step:  # lower case: used like a function, @step("plan") / with step("plan")
    """A reasoning step: ``step_start`` on entry (a kill boundary), ``step_end`` on exit.

    Use as ``with step("plan"):``, ``async with step("plan"):`` or as a decorator
    ``@step("plan")`` on a sync or async function (the action defaults to the
    function's name with ``@step()``). An exception ends the step with status
    ``error`` and is recorded as an error.
    """

    def __init__(self, action: str | None = None, *, context: str | None = None) -> None:
        self.action = action
        self.context = context
        self.output: Any = None
        """Set inside the block to give the step an output summary."""

    def __enter__(self) -> step:
        current_run().step(self.action, context=self.context)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run = current_run()
        if exc is not None and isinstance(exc, Exception) and not run.killed:
            run.error(exc)
        run.end_step(output_summary=summarize(self.output), status="ok" if exc is None else "error")

    async def __aenter__(self) -> step:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        action = self.action or fn.__name__
        context = self.context
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with step(action, context=context) as current:
                    current.output = await fn(*args, **kwargs)
                    return current.output

            return cast(Callable[P, T], run_async)

        @functools.wraps(fn)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> T:
            with step(action, context=context) as current:
                result = fn(*args, **kwargs)
                current.output = result
                return result

        return run_sync


@overload
def tool(fn: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def tool(*, name: str | None = None) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


def tool(
    fn: Callable[P, T] | None = None, /, *, name: str | None = None
) -> Callable[P, T] | Callable[[Callable[P, T]], Callable[P, T]]:
    """Record each call of the function as a tool call at its six stages.

    The call's arguments (bound to parameter names) are the tool arguments; the
    return value is the response (kept in this process for a ROLLBACK's
    compensation). Selecting and invoking the tool are kill boundaries. Use as
    ``@tool`` or ``@tool(name="kb_search")``; register what the tool does with
    :func:`agents_bridge.actions.action`.
    """

    def decorate(function: Callable[P, T]) -> Callable[P, T]:
        tool_name = name or function.__name__
        signature = inspect.signature(function)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return {"args": list(args), **kwargs}
            bound.apply_defaults()
            return dict(bound.arguments)

        if inspect.iscoroutinefunction(function):
            call_async = cast(Callable[P, Awaitable[Any]], function)

            @functools.wraps(function)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with current_run().tool(tool_name, arguments(args, kwargs)) as call:
                    result = await call_async(*args, **kwargs)
                    call.response_received(output_summary=summarize(result), result=result)
                    return result

            return cast(Callable[P, T], run_async)

        @functools.wraps(function)
        def run_sync(*args: P.args, **kwargs: P.kwargs) -> T:
            with current_run().tool(tool_name, arguments(args, kwargs)) as call:
                result = function(*args, **kwargs)
                call.response_received(output_summary=summarize(result), result=result)
                return result

        return run_sync

    return decorate(fn) if fn is not None else decorate
