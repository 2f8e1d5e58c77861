"""Bad input from agent code: an error in strict mode, counted and reported otherwise.

Lenient mode, the production default, never raises into the agent: invalid
values are dropped or truncated, counted by kind, and logged once per kind.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, overload

from agents_bridge.canonical import args_hash, canonical_json

__all__ = ["InputGuard", "InvalidEventError"]

_log = logging.getLogger(__name__)


class InvalidEventError(ValueError):
    """Agent code passed a value the bridge cannot record (strict mode only)."""


class InputGuard:
    def __init__(
        self, strict: bool, max_text_chars: int, redact: Callable[[str], str] | None = None
    ) -> None:
        self.strict = strict
        self.max_text_chars = max_text_chars
        self._redact = redact
        self._lock = threading.Lock()
        self.problems: collections.Counter[str] = collections.Counter()
        """Counts of invalid input by kind, in lenient mode."""

    def reject(self, kind: str, message: str) -> None:
        """Raise in strict mode; otherwise count (and log the first of each kind)."""
        if self.strict:
            raise InvalidEventError(message)
        with self._lock:
            self.problems[kind] += 1
            first = self.problems[kind] == 1
        if first:
            _log.warning("invalid agent input (%s), counted from now on: %s", kind, message)

    def text(self, field: str, value: str | None) -> str | None:
        """Redacted and bounded free text."""
        if value is None:
            return None
        if self._redact is not None:
            value = self._redact(value)
        if len(value) > self.max_text_chars:
            self.reject(
                "oversize",
                f"{field} has {len(value)} characters (limit {self.max_text_chars}); truncated",
            )
            value = value[: self.max_text_chars]
        return value

    @overload
    def identifier(self, field: str, value: str) -> str: ...
    @overload
    def identifier(self, field: str, value: str | None) -> str | None: ...
    def identifier(self, field: str, value: str | None) -> str | None:
        """An id as a plain ``str``: a str subclass (an enum member...) becomes its
        characters; anything else is invalid input, recorded as its ``str()``."""
        if value is None or type(value) is str:
            return value
        if isinstance(value, str):
            return str.__str__(value)
        self.reject("bad_id", f"{field} must be a string, got {type(value).__name__}")
        return str(value)

    def count(self, field: str, value: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self.reject("bad_count", f"{field} must be a non-negative integer, got {value!r}")
            return 0
        return value

    def arguments(self, args: Any) -> tuple[str, str] | None:
        """(canonical JSON, normalized hash) of tool arguments, or None if unserialisable."""
        try:
            return canonical_json(args), args_hash(args)
        except TypeError as exc:
            self.reject("unserialisable_args", str(exc))
            return None
