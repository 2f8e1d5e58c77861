"""Faust tables of JSON values, parsed objects kept in memory, written behind.

Faust's stores keep values serialized, so every read would parse the value
again. These adapters keep the parsed objects of recently used keys and stage
changes; a staged key reaches the table (and its changelog) at most once per
flush interval, and always before the worker commits the offsets of the events
that changed it, and when a rebalance starts. A changelog record costs the
stream as much as several events (measured on the embedded broker: with a
write per changed key per batch, the worker kept up with 450 of the 1,800
events/s of 200 live agents); written behind, a key that changes on every
event costs one record per interval.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from typing import Any, Generic, TypeVar

import faust
from faust.streams import _current_event  # Faust picks a write's partition from it
from pydantic import BaseModel

from app.detectors._state import State

__all__ = ["JsonTable", "StateTable", "dump_model", "model_loader", "tables_of"]

V = TypeVar("V")
M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound=State)

_log = logging.getLogger(__name__)


Assigned = Collection[tuple[str, int]]
"""The (topic, partition) pairs a consumer holds now."""


class _WriteBehind(faust.Sensor):
    """Flushes an app's tables before Faust commits offsets and when a rebalance starts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[JsonTable[Any]] = []

    def flush(self, assigned: Assigned) -> None:
        for table in self.tables:
            try:
                table.flush(assigned)
            except Exception:  # one table's failure must not keep the others unwritten
                _log.exception("writing %s behind failed", table.name)

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.flush(consumer.assignment())

    def on_rebalance_start(self, app: Any) -> dict[Any, Any]:
        self.flush(app.consumer.assignment())  # not revoked yet: still this worker's
        return {}


def _write_behind(app: faust.App) -> _WriteBehind:
    sensor: _WriteBehind | None = getattr(app, "_trc_write_behind", None)
    if sensor is None:
        sensor = _WriteBehind()
        app.sensors.add(sensor)
        app._trc_write_behind = sensor  # type: ignore[attr-defined]
    return sensor


def tables_of(app: faust.App) -> list[JsonTable[Any]]:
    """Every JsonTable created for ``app``."""
    return list(_write_behind(app).tables)


class JsonTable(Generic[V]):
    """A changelog-backed table of JSON values, read and written as objects.

    ``load`` turns JSON (bytes or str as written, or the object Faust's codec
    already parsed when recovering from the changelog) into a value; ``dump``
    turns a value into JSON bytes. Changes are staged from stream iteration and
    written at most every ``flush_interval_s`` (see the module's docstring).
    """

    def __init__(
        self,
        app: faust.App,
        name: str,
        partitions: int,
        load: Callable[[Any], V],
        dump: Callable[[V], bytes],
        cache_size: int = 50_000,
        flush_interval_s: float = 1.0,
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
        self._cache_size = cache_size
        self._staged: dict[str, tuple[int, V | None]] = {}
        """key -> (partition of the event that changed it, value or None for deleted)."""
        self._anchors: dict[int, Any] = {}
        """partition -> an event of it: Faust writes a key to the current event's partition."""
        self._flush_interval_s = flush_interval_s
        self._flushed_at = time.monotonic()
        _write_behind(app).tables.append(self)

    def get(self, key: str) -> V | None:
        """The value of ``key``, or None."""
        if key in self._staged:
            return self._staged[key][1]
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        raw = self.table.get(key)
        if raw is None:
            return None
        value = self._load(raw)
        self._remember(key, value)
        return value

    def stage(self, key: str, value: V) -> None:
        """Keep ``value`` for reads now; write it behind. Only from stream iteration."""
        self._stage(key, value)
        self._remember(key, value)

    def delete(self, key: str) -> None:
        """Forget ``key`` now; delete it from the table behind. Only from stream iteration."""
        self._stage(key, None)
        self._cache.pop(key, None)

    def commit(self) -> None:
        """End of a batch of the stream: write what is staged if the interval is over."""
        if time.monotonic() - self._flushed_at >= self._flush_interval_s:
            self.flush()

    def flush(self, assigned: Assigned | None = None) -> None:
        """Write every staged change to the table now, each to its event's partition.

        With ``assigned``, changes of partitions this worker no longer holds are
        dropped instead: their changelog belongs to another worker now (it
        replays the uncommitted events that made them)."""
        staged, self._staged = self._staged, {}
        self._flushed_at = time.monotonic()
        for key, (partition, value) in staged.items():
            anchor = self._anchors[partition]
            if assigned is not None and (anchor.message.topic, partition) not in assigned:
                continue
            token = _current_event.set(weakref.ref(anchor))
            try:
                if value is not None:
                    self.table[key] = self._dump(value)
                elif key in self.table:
                    del self.table[key]
            finally:
                _current_event.reset(token)

    @property
    def name(self) -> str:
        """The Faust table's name."""
        return str(self.table.name)

    def __len__(self) -> int:
        """Keys held, staged changes included. Costly on RocksDB: it counts by iterating."""
        count = len(self.table)
        for key, (_, value) in self._staged.items():
            written = key in self.table
            if value is not None and not written:
                count += 1
            elif value is None and written:
                count -= 1
        return count

    def items(self) -> Iterator[tuple[str, V]]:
        """Every value this worker holds (read-only; safe from timers)."""
        staged = dict(self._staged)
        for key, (_, value) in staged.items():
            if value is not None:
                yield key, value
        for key, raw in list(self.table.items()):
            if key in staged:
                continue
            value = self._cache.get(key)
            yield key, value if value is not None else self._load(raw)

    def forget(self, assigned: Assigned) -> None:
        """After a rebalance: write what is staged for partitions still held (events of
        the batch in flight while it started), drop the rest and the cache."""
        self.flush(assigned)
        self._anchors = {p: e for p, e in self._anchors.items() if (e.message.topic, p) in assigned}
        self._cache.clear()

    def _stage(self, key: str, value: V | None) -> None:
        event = faust.current_event()
        if event is None:
            raise RuntimeError(f"{self.table.name}: tables are written from stream iteration only")
        partition = int(event.message.partition)
        self._anchors[partition] = event
        self._staged[key] = (partition, value)

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

    def __init__(
        self,
        app: faust.App,
        name: str,
        state_type: type[S],
        partitions: int,
        flush_interval_s: float = 1.0,
    ) -> None:
        super().__init__(
            app,
            name,
            partitions,
            model_loader(state_type),
            dump_model,
            flush_interval_s=flush_interval_s,
        )
        self._empty = state_type()
        """What a key never seen reads as: one shared instance (states are immutable, and a
        new one per read cost a model construction per event for keys that stay empty)."""

    def get(self, key: str) -> S:
        """The state of ``key``, or the empty state."""
        value = super().get(key)
        return self._empty if value is None else value
