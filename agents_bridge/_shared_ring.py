"""A byte ring in shared memory: one process writes frames, another takes them.

Writing is a memory copy and two integer stores, with no system call: a pipe
write cost the agent's thread a p99 of 45-85 µs on a 2-core VM, the copy
18-26 µs (measured with the same agents emitting 5,000 events/s).

Layout: a header (bytes written, bytes taken, the reader's "asleep" flag, each
on its own cache line), then the data area. Positions only grow, so full and empty are never
ambiguous. Each frame is ``length, crc32, body``, padded to 8 bytes, and never
wraps: a frame that does not fit before the end is preceded by a skip marker.
The checksum lets the reader tell a frame whose bytes are not visible yet (on
CPUs that reorder stores) from a complete one: it waits for it.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
import zlib

__all__ = ["SharedRing"]

_log = logging.getLogger(__name__)

_HEADER = 192
_WRITTEN, _TAKEN, _ASLEEP = 0, 64, 128
"""Each on its own cache line: the two processes write different ones."""
_POSITION = struct.Struct("<Q")
_FRAME = struct.Struct("<II")
_SKIP = 0xFFFFFFFF
_VISIBLE_WITHIN_S = 1.0
"""A frame still failing its checksum after this long is corrupt, not late."""


def _padded(size: int) -> int:
    return (size + 7) & ~7


class SharedRing:
    """Frames in a memfd-backed ring; ``fd`` is inherited by the reading process."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # Populated up front: a first write to each page would otherwise fault on the
        # agent's thread (a p99 cost, measured).
        self._memory = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        self._capacity = len(self._memory) - _HEADER
        self.max_frame = self._capacity // 4
        """Bodies larger than this are refused by :meth:`put`."""

    @classmethod
    def create(cls, capacity: int) -> SharedRing:
        fd = os.memfd_create("trc-events", 0)  # not inheritable unless passed on purpose
        os.ftruncate(fd, _HEADER + _padded(capacity))
        return cls(fd)

    def _get(self, offset: int) -> int:
        value: int = _POSITION.unpack_from(self._memory, offset)[0]
        return value

    def _set(self, offset: int, value: int) -> None:
        _POSITION.pack_into(self._memory, offset, value)

    # -- writer ----------------------------------------------------------------

    def put(self, body: bytes) -> bool:
        """Append one frame; False when the ring has no room for it now."""
        size = _padded(_FRAME.size + len(body))
        written = self._get(_WRITTEN)
        start = written % self._capacity
        skip = self._capacity - start if start + size > self._capacity else 0
        if written + skip + size - self._get(_TAKEN) > self._capacity:
            return False
        if skip:
            _FRAME.pack_into(self._memory, _HEADER + start, _SKIP, 0)
            start = 0
        _FRAME.pack_into(self._memory, _HEADER + start, len(body), zlib.crc32(body))
        offset = _HEADER + start + _FRAME.size
        self._memory[offset : offset + len(body)] = body
        self._set(_WRITTEN, written + skip + size)  # published last
        return True

    @property
    def reader_asleep(self) -> bool:
        return self._get(_ASLEEP) == 1

    # -- reader ----------------------------------------------------------------

    def take(self) -> list[bytes]:
        """Every frame written so far, oldest first; their space is free again."""
        bodies = []
        taken, written = self._get(_TAKEN), self._get(_WRITTEN)
        while taken < written:
            start = taken % self._capacity
            length, crc = _FRAME.unpack_from(self._memory, _HEADER + start)
            if length == _SKIP:
                taken += self._capacity - start
                continue
            offset = _HEADER + start + _FRAME.size
            body = self._memory[offset : offset + length]
            if zlib.crc32(body) == crc:
                bodies.append(body)
            elif (late := self._wait_visible(offset, length, crc)) is not None:
                bodies.append(late)
            taken += _padded(_FRAME.size + length)
        self._set(_TAKEN, taken)
        return bodies

    def _wait_visible(self, offset: int, length: int, crc: int) -> bytes | None:
        deadline = time.monotonic() + _VISIBLE_WITHIN_S
        while time.monotonic() < deadline:
            time.sleep(0)
            body = self._memory[offset : offset + length]
            if zlib.crc32(body) == crc:
                return body
        _log.error("a %d-byte frame in the event ring is corrupt; skipped", length)
        return None

    def set_asleep(self, asleep: bool) -> None:
        """The reader is about to wait for the doorbell (or has woken up)."""
        if self.reader_asleep != asleep:  # a read costs less than moving the cache line
            self._set(_ASLEEP, 1 if asleep else 0)

    def close(self) -> None:
        self._memory.close()
        os.close(self.fd)
