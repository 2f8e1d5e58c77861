"""A Faust table of one state type: JSON bytes in the changelog, objects in memory.

Faust's stores keep values serialized, so every read would parse the state
again. This adapter keeps the parsed objects of recently used keys, writes
through to the table (and so to its changelog) on every change, and forgets
its cache on every rebalance, when partitions may have moved.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import faust

from app.detectors._state import State

__all__ = ["StateTable"]

S = TypeVar("S", bound=State)


class StateTable(Generic[S]):
    def __init__(
        self,
        app: faust.App,
        name: str,
        state_type: type[S],
        partitions: int,
        cache_size: int = 50_000,
    ) -> None:
        self.table: Any = app.Table(
            name,
            default=None,
            partitions=partitions,
            schema=faust.Schema(
                key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"
            ),
        )
        self._type = state_type
        self._cache: OrderedDict[str, S] = OrderedDict()
        self._dirty: dict[str, S] = {}
        self._cache_size = cache_size

    def get(self, key: str) -> S:
        """The state of ``key``, or a fresh one."""
        state = self._cache.get(key)
        if state is not None:
            self._cache.move_to_end(key)
            return state
        raw = self.table.get(key)
        state = self._parse(raw) if raw else self._type()
        self._remember(key, state)
        return state

    def _parse(self, raw: Any) -> S:
        # Values we wrote are JSON bytes; values recovered from the changelog arrive
        # already parsed by Faust's default JSON codec.
        if isinstance(raw, dict):
            return self._type.model_validate(raw)
        return self._type.model_validate_json(raw)

    def set(self, key: str, state: S) -> None:
        """Store ``state`` now; only call from stream iteration (the changelog needs it)."""
        self._remember(key, state)
        self._dirty.pop(key, None)
        self.table[key] = state.model_dump_json().encode()

    def stage(self, key: str, state: S) -> None:
        """Keep ``state`` for reads now; write it with the next :meth:`commit`."""
        self._remember(key, state)
        self._dirty[key] = state

    def commit(self) -> None:
        """Write every staged state: one changelog record per key per batch."""
        dirty, self._dirty = self._dirty, {}
        for key, state in dirty.items():
            self.table[key] = state.model_dump_json().encode()

    def items(self) -> Iterator[tuple[str, S]]:
        """Every state this worker holds (read-only; safe from timers)."""
        for key, raw in list(self.table.items()):
            yield key, self._cache.get(key) or self._parse(raw)

    def forget(self) -> None:
        """Drop the cache: after a rebalance the table is the truth."""
        self._cache.clear()
        self._dirty.clear()

    def _remember(self, key: str, state: S) -> None:
        self._cache[key] = state
        self._cache.move_to_end(key)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
