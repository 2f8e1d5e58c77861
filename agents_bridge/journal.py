"""The spill journal: an append-only file of encoded events waiting for the broker.

Records are appended in emission order and replayed in that order; a small
checkpoint file remembers how far replay got, so an agent process that dies
while the broker is away replays its backlog on its next start. Bounded in
size: past ``max_bytes`` new records are refused and counted, never silently
lost.

Format of ``journal.log``: per record, a 4-byte big-endian length, then
``topic \\0 key \\0 value`` (topic and key are ASCII; value is the Avro record).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Journal", "JournalEntry"]

_LENGTH = struct.Struct(">I")
JournalEntry = tuple[str, bytes, bytes]
"""(topic, key, value)."""


class Journal:
    """Append, ordered replay and a durable checkpoint; safe across threads and processes.

    Processes sharing a journal directory (agent workers on one host) take an
    exclusive ``flock`` for every operation.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._log = directory / "journal.log"
        self._checkpoint = directory / "journal.checkpoint"
        self._max_bytes = max_bytes
        self._thread_lock = threading.Lock()
        self._lock_path = directory / "journal.lock"
        self._log.touch()
        self.refused = 0
        """Records refused because the journal was full."""

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with self._thread_lock, self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _replayed_up_to(self) -> int:
        try:
            return int(self._checkpoint.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def append(self, entries: list[JournalEntry]) -> int:
        """Append ``entries`` in order; returns how many were refused for lack of room."""
        with self._lock():
            size = self._log.stat().st_size
            refused = 0
            with self._log.open("ab") as log:
                for topic, key, value in entries:
                    body = topic.encode() + b"\0" + key + b"\0" + value
                    if size + _LENGTH.size + len(body) > self._max_bytes:
                        refused += 1
                        continue
                    log.write(_LENGTH.pack(len(body)) + body)
                    size += _LENGTH.size + len(body)
                log.flush()
                os.fsync(log.fileno())  # survives the agent process dying
            self.refused += refused
            return refused

    def pending(self) -> bool:
        with self._lock():
            return self._log.stat().st_size > self._replayed_up_to()

    def read(self, limit: int = 1000) -> tuple[list[JournalEntry], int]:
        """Up to ``limit`` unreplayed entries, oldest first, and the position after them."""
        with self._lock():
            position = self._replayed_up_to()
            entries: list[JournalEntry] = []
            with self._log.open("rb") as log:
                log.seek(position)
                while len(entries) < limit:
                    header = log.read(_LENGTH.size)
                    if len(header) < _LENGTH.size:
                        break
                    (length,) = _LENGTH.unpack(header)
                    body = log.read(length)
                    if len(body) < length:
                        break  # a torn write at a crash: stop before it
                    topic, key, value = body.split(b"\0", 2)
                    entries.append((topic.decode(), key, value))
                    position += _LENGTH.size + length
            return entries, position

    def mark_replayed(self, position: int) -> None:
        """Everything before ``position`` reached the broker; compact when all did."""
        with self._lock():
            if position >= self._log.stat().st_size:
                self._log.write_bytes(b"")  # nothing left: start the file afresh
                position = 0
            tmp = self._checkpoint.with_suffix(".tmp")
            tmp.write_text(str(position))
            os.replace(tmp, self._checkpoint)

    def __iter__(self) -> Iterator[JournalEntry]:
        entries, _ = self.read(limit=10**9)
        return iter(entries)
