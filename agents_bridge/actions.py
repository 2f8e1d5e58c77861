"""The action-type registry: what each tool does to the world, and how to undo it.

A ROLLBACK walks a task's action journal in reverse: ``read`` tools need
nothing, ``write`` tools run their compensating action, and ``irreversible``
tools (a sent email, a filed ticket, an executed payment) are escalated to a
human. A tool nobody registered counts as irreversible and is flagged as such.

>>> registry.register("send_email", kind="irreversible")
>>> @action("write", compensate=lambda args, result: delete_file(args["path"]))
... def create_file(path: str) -> str: ...
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

__all__ = [
    "ActionKind",
    "ActionRegistry",
    "ActionSpec",
    "Compensation",
    "OnKill",
    "action",
    "registry",
]

ActionKind = Literal["read", "write", "irreversible"]
OnKill = Literal["cancel", "finish"]
Compensation = Callable[[Any, Any], Any]
"""``compensate(args, result)``: undoes one call, given its arguments and result."""

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ActionSpec:
    """How one tool behaves under KILL and ROLLBACK.

    ``on_kill`` says what a KILL does to a call in flight: ``cancel`` stops it at
    once, ``finish`` lets it complete first (a write that must not be torn).
    """

    name: str
    kind: ActionKind
    compensate: Compensation | None = None
    on_kill: OnKill = "cancel"
    registered: bool = True


class ActionRegistry:
    """Tool name -> :class:`ActionSpec`; thread-safe, one per process by default."""

    def __init__(self) -> None:
        self._specs: dict[str, ActionSpec] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        *,
        kind: ActionKind,
        compensate: Compensation | None = None,
        on_kill: OnKill | None = None,
    ) -> ActionSpec:
        """Declare ``name``; a ``write`` needs ``compensate``. Re-registering replaces."""
        if kind not in get_args(ActionKind):
            raise ValueError(f"kind {kind!r} must be one of {', '.join(get_args(ActionKind))}")
        if kind == "write" and compensate is None:
            raise ValueError(f"write tool {name!r} needs compensate=(args, result) -> None")
        if kind != "write" and compensate is not None:
            raise ValueError(f"{kind} tool {name!r} takes no compensating action")
        if on_kill is not None and on_kill not in get_args(OnKill):
            raise ValueError(f"on_kill {on_kill!r} must be one of {', '.join(get_args(OnKill))}")
        # Reads are safe to interrupt; a write or an irreversible call is left to finish.
        default: OnKill = "cancel" if kind == "read" else "finish"
        spec = ActionSpec(name, kind, compensate, on_kill or default)
        with self._lock:
            self._specs[name] = spec
        return spec

    def unregister(self, name: str) -> None:
        with self._lock:
            self._specs.pop(name, None)

    def spec(self, name: str) -> ActionSpec:
        """The entry for ``name``; an unregistered tool counts as irreversible."""
        with self._lock:
            found = self._specs.get(name)
        return found or ActionSpec(name, "irreversible", on_kill="finish", registered=False)

    def action(
        self,
        kind: ActionKind,
        *,
        compensate: Compensation | None = None,
        name: str | None = None,
        on_kill: OnKill | None = None,
    ) -> Callable[[_F], _F]:
        """Decorator: register the function under ``name`` (default: its own name)."""

        def register(fn: _F) -> _F:
            self.register(name or fn.__name__, kind=kind, compensate=compensate, on_kill=on_kill)
            return fn

        return register


registry = ActionRegistry()
"""The process-wide registry that monitors use unless given another."""

action = registry.action
