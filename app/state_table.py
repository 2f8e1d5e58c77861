"""Faust tables of JSON values with the parsed objects kept in memory.

Faust's stores keep values serialized, so every read would parse the value
again. These adapters keep the parsed objects of recently used keys, stage
changes and write each changed key once per batch (one changelog record per
key per batch), and forget their cache on every rebalance, when partitions may
have moved.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import faust
from pydantic import BaseModel

from app.detectors._state import State

__all__ = ["JsonTable", "StateTable", "dump_model", "model_loader"]

V = TypeVar("V")
M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound=State)


class JsonTable(Generic[V]):
    """A changelog-backed table of JSON values, read and written as objects.

    ``load`` turns JSON (bytes or str as written, or the object Faust's codec
    already parsed when recovering from the changelog) into a value; ``dump``
    turns a value into JSON bytes.
    """

    def __init__(
        self,
        app: faust.App,
        name: str,
        partitions: int,
        load: Callable[[Any], V],
        dump: Callable[[V], bytes],
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
        self._load, self._dump = load, dump
        self._cache: OrderedDict[str, V] = OrderedDict()
        self._dirty: dict[str, V] = {}
        self._deleted: set[str] = set()
        self._cache_size = cache_size

    def get(self, key: str) -> V | None:
        """The value of ``key``, or None."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if key in self._deleted:
            return None
        raw = self.table.get(key)
        if raw is None:
            return None
        value = self._load(raw)
        self._remember(key, value)
        return value

    def stage(self, key: str, value: V) -> None:
        """Keep ``value`` for reads now; write it with the next :meth:`commit`."""
        self._deleted.discard(key)
        self._remember(key, value)
        self._dirty[key] = value

    def delete(self, key: str) -> None:
        """Forget ``key`` now; delete it from the table with the next :meth:`commit`."""
        self._cache.pop(key, None)
        self._dirty.pop(key, None)
        self._deleted.add(key)

    def commit(self) -> None:
        """Write staged values and deletions; only from stream iteration (the changelog)."""
        dirty, self._dirty = self._dirty, {}
        deleted, self._deleted = self._deleted, set()
        for key, value in dirty.items():
            self.table[key] = self._dump(value)
        for key in deleted:
            if key in self.table:
                del self.table[key]

    def items(self) -> Iterator[tuple[str, V]]:
        """Every value this worker holds (read-only; safe from timers)."""
        for key, raw in list(self.table.items()):
            if key in self._deleted:
                continue
            value = self._dirty.get(key)
            if value is None:
                value = self._cache.get(key)
            yield key, value if value is not None else self._load(raw)

    def forget(self) -> None:
        """Drop the cache: after a rebalance the table is the truth."""
        self._cache.clear()
        self._dirty.clear()
        self._deleted.clear()

    def _remember(self, key: str, value: V) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def model_loader(model: type[M]) -> Callable[[Any], M]:
    """``load`` for a pydantic model: JSON as written, or a recovered dict."""

    def load(raw: Any) -> M:
        if isinstance(raw, dict):
            return model.model_validate(raw)
        return model.model_validate_json(raw)

    return load


def dump_model(value: BaseModel) -> bytes:
    """``dump`` for a pydantic model."""
    return value.model_dump_json().encode()


class StateTable(JsonTable[S]):
    """Detector state per key: a fresh state for a key never seen."""

    def __init__(self, app: faust.App, name: str, state_type: type[S], partitions: int) -> None:
        super().__init__(app, name, partitions, model_loader(state_type), dump_model)
        self._type = state_type

    def get(self, key: str) -> S:
        """The state of ``key``, or a fresh one."""
        return super().get(key) or self._type()
