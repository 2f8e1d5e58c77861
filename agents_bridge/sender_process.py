"""Sending from a child process: the agent's thread only copies bytes to shared memory.

Encoding and sending cost ~30 µs of Python per event. On a thread of the
agent's own process that work holds the interpreter lock, and an agent thread
that wants the lock back waits for it: measured, p99 emit cost 365-725 µs. In
a child process it runs on another core and never touches the agent's lock;
the agent's thread pays a ``marshal.dumps`` of a compact frame
(:mod:`agents_bridge.event_frame`) and a copy into a shared ring
(:mod:`agents_bridge._shared_ring`), with no system call while events flow.

The child runs the :class:`~agents_bridge.emitter.Emitter` (queue, batching,
journal spill and replay). It polls the ring every millisecond while events
flow and waits on a doorbell pipe when idle; the agent rings it only for the
first event after a pause. Control messages (flush, describe, close: lists,
where events are tuples and routed records dicts) travel in the ring, in order
with the events, and are answered on a reply pipe.

If the child cannot start, or dies, the parent takes back what the child had
not read yet and sends from a thread of its own (the Emitter in this process),
and says so in the log; ``sender = "thread"`` chooses that from the start. If
the parent dies, the child still sends (or journals) everything it was given.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import marshal
import os
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from pydantic import SecretStr

from agents_bridge._shared_ring import SharedRing
from agents_bridge.codec import Record
from agents_bridge.emitter import ROUTE, Emitter
from agents_bridge.event_frame import EventFrame
from agents_bridge.log_limit import RepeatLimit
from agents_bridge.settings import Settings

__all__ = ["SenderProcess"]

_log = logging.getLogger(__name__)

_RING_BYTES = 4 * 1024 * 1024
"""Shared memory between the agent and its sender: ~15,000 typical events."""
_MAX_BACKLOG_BYTES = 64 * 1024 * 1024
"""Past this much waiting for a full ring, new events are dropped and counted."""
_POLL_S = 0.001
_POLL_FOR_S = 2.0
"""After the last frame, the child polls this long before it waits for the doorbell."""
_ASLEEP_RECHECK_S = 0.05
"""An asleep child also looks at the ring this often: a doorbell can race its sleep."""
_LENGTH = struct.Struct("<I")
_CHILD = "from agents_bridge.sender_process import _child_main; _child_main()"


class SenderProcess:
    """The agent-side end: ``emit`` copies the event frame to the child and never blocks."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        """Serialises writers of the ring (and the fall-back to a local sender)."""
        self._request_lock = threading.Lock()
        self._backlog: collections.deque[bytes] = collections.deque()
        """Marshalled messages (ring frames' bodies) a full ring did not take yet, oldest first."""
        self._backlog_bytes = 0
        self._ring: SharedRing | None = None
        self._doorbell = -1
        self._replies = -1
        self._child: subprocess.Popen[bytes] | None = None
        self._local: Emitter | None = None
        """Sends from this process: chosen by settings, or the child could not run."""
        self._requests = 0
        self._closing = False
        self._watcher: threading.Thread | None = None
        self._local_start: threading.Thread | None = None
        self._dropped_backlog_full = 0
        self._rejected = 0

    # -- agent thread ----------------------------------------------------------

    def emit(self, frame: EventFrame) -> None:
        """Hand an agent event to the sender; never blocks."""
        self._hand_over(frame)

    def emit_to(self, schema: str, topic: str, key: str, record: Record) -> None:
        """Queue a record for another topic, in order with the events (checkpoints...)."""
        self._hand_over({**record, ROUTE: (schema, topic, key)})

    def _hand_over(self, item: EventFrame | Record) -> None:
        if self._local is not None:
            self._local.emit(item)
            return
        try:
            body = marshal.dumps(item)
        except ValueError:  # a value marshal cannot carry (the guard normally stops it)
            self._rejected += 1
            return
        with self._lock:
            if self._local is not None:  # the child died while we waited
                self._local.emit(item)
            elif self._backlog_bytes > _MAX_BACKLOG_BYTES:
                self._dropped_backlog_full += 1
            else:
                self._put(body)

    def _put(self, body: bytes) -> None:
        """Into the ring behind any backlog; what does not fit (or comes before
        :meth:`start`) waits. Holds the lock."""
        ring = self._ring
        if ring is not None and len(body) > ring.max_frame:
            self._rejected += 1
            _log.error("dropping a %d-byte record: larger than the sender accepts", len(body))
            return
        if ring is None or not (self._drain(ring) and ring.put(body)):
            self._backlog.append(body)
            self._backlog_bytes += len(body)
        if ring is not None and ring.reader_asleep:
            self._ring_doorbell()

    def _drain(self, ring: SharedRing) -> bool:
        """Move the backlog into the ring, oldest first; True when nothing waits."""
        while self._backlog and ring.put(self._backlog[0]):
            self._backlog_bytes -= len(self._backlog.popleft())
        return not self._backlog

    def _ring_doorbell(self) -> None:
        assert self._ring is not None
        self._ring.set_asleep(False)  # one ring per pause is enough
        try:
            os.write(self._doorbell, b"\0")
        except BlockingIOError:
            pass  # already rung and not read yet
        except OSError as exc:  # EPIPE: the child is gone
            self._send_locally(f"the sender process is gone ({exc})")

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the child (or the local sender); returns without waiting for the broker."""
        if self._settings.sender == "thread" or not hasattr(os, "memfd_create"):
            self._start_locally(None)  # chosen, or not Linux: no memfd for the ring
            return
        try:
            self._ring = SharedRing.create(_RING_BYTES)
        except OSError as exc:
            self._start_locally(f"no shared memory for the sender process ({exc})")
            return
        bell_read, bell_write = os.pipe()
        reply_read, reply_write = os.pipe()
        theirs = (self._ring.fd, bell_read, reply_write)
        self._doorbell, self._replies = bell_write, reply_read
        os.set_blocking(bell_write, False)
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, *map(str, theirs)],
                stdin=subprocess.PIPE,
                pass_fds=theirs,
            )
            assert self._child.stdin is not None
            self._child.stdin.write(_settings_json(self._settings).encode())
            self._child.stdin.close()
        except OSError as exc:
            self._child = None
            os.close(bell_write)
            os.close(reply_read)
            self._start_locally(f"cannot start the sender process ({exc})")
        else:
            with self._lock:
                self._drain(self._ring)  # what was emitted before the start
            self._watcher = threading.Thread(
                target=self._watch, name="trc-sender-watch", daemon=True
            )
            self._watcher.start()
        finally:
            os.close(bell_read)
            os.close(reply_write)

    def _start_locally(self, why: str | None) -> None:
        with self._lock:  # an agent thread may be emitting already
            self._send_locally(why)

    def _watch(self) -> None:
        """Waits for the child to exit (costs nothing until then); an early exit hands over."""
        assert self._child is not None
        code = self._child.wait()
        with self._lock:
            if not self._closing and self._local is None:
                self._send_locally(f"the sender process exited ({code})")

    def _send_locally(self, why: str | None) -> None:
        """From now on send from a thread of this process: because of ``why`` (logged), or
        as the settings chose (None). Holds the lock, or runs before anything else."""
        if why:
            _log.error("%s: sending events from a thread of this process instead", why)
        local = Emitter(self._settings)
        unread = self._ring.take() if self._ring is not None else []
        for body in [*unread, *self._backlog]:  # what the child had not read yet, in order
            message = marshal.loads(body)
            if not isinstance(message, list):  # requests are lists; nobody waits for them now
                local.emit(message)
        self._backlog.clear()
        self._backlog_bytes = 0
        # Connecting may take seconds; whoever got here (maybe an agent thread) goes on.
        starter = threading.Thread(target=local.start, name="trc-sender-start", daemon=True)
        starter.start()
        self._local_start = starter  # before _local: who sees _local may join the start
        self._local = local  # every later event queues behind those

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted so far was sent or journaled; False on timeout."""
        deadline = timeout if timeout is not None else self._settings.flush_timeout_s
        if self._local is None:
            answer = self._request("flush", deadline, wait=deadline + 5)
            child, watcher = self._child, self._watcher
            if answer is None and child and watcher and child.poll() is not None:
                watcher.join(deadline)  # it died meanwhile: the watcher is handing over
            if self._local is None:
                return bool(answer)
        self._local_started(deadline)
        return self._local.flush(deadline)

    def _local_started(self, timeout: float) -> None:
        if self._local_start is not None:
            self._local_start.join(timeout)

    def describe(self) -> dict[str, Any]:
        """The sender's counters (see :class:`~agents_bridge.emitter.EmitterStats`)."""
        stats = None if self._local is not None else self._request("describe", 0, wait=10)
        if self._local is not None:
            self._local_started(10)
            stats = self._local.describe()
        stats = stats or {"sender_unreachable": True}
        stats["dropped_queue_full"] = stats.get("dropped_queue_full", 0) + (
            self._dropped_backlog_full
        )
        stats["rejected_invalid"] = stats.get("rejected_invalid", 0) + self._rejected
        stats["sender"] = "thread" if self._local is not None else "process"
        stats["sender_pid"] = self._child.pid if self._local is None and self._child else None
        return stats

    def close(self) -> None:
        """Flush with the configured deadline; what is left goes to the journal."""
        self._closing = True
        if self._child is not None:
            if self._local is None:
                self._request("close", 0, wait=self._settings.flush_timeout_s + 10)
            os.close(self._doorbell)  # the child also exits on this
            try:
                self._child.wait(self._settings.flush_timeout_s + 10)
            except subprocess.TimeoutExpired:
                _log.error("the sender process did not exit; killing it (pid %d)", self._child.pid)
                self._child.kill()
                self._child.wait()
            os.close(self._replies)
            self._child = None
        if self._local is not None:
            self._local_started(self._settings.flush_timeout_s + 30)
            self._local.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def _request(self, kind: str, argument: float, wait: float) -> Any:
        """Send a control message behind every event so far; its answer, or None."""
        with self._request_lock:
            self._requests += 1
            number = self._requests
            deadline = time.monotonic() + wait
            with self._lock:
                if self._local is not None:
                    return None
                self._put(marshal.dumps([kind, number, argument]))
            while True:  # the request must be in the ring to be answered
                with self._lock:
                    if self._local is not None or self._ring is None:
                        return None
                    if self._drain(self._ring):
                        self._ring_doorbell()
                        break
                if time.monotonic() > deadline:
                    return None
                time.sleep(_POLL_S)
            return self._answer(number, deadline)

    def _answer(self, number: int, deadline: float) -> Any:
        buffer = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self._replies], [], [], 0.05)
            if not readable:
                continue
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                return None  # the child exited
            buffer += chunk
            while len(buffer) >= _LENGTH.size:
                (size,) = _LENGTH.unpack_from(buffer)
                if len(buffer) < _LENGTH.size + size:
                    break
                answered, value = marshal.loads(buffer[_LENGTH.size : _LENGTH.size + size])
                buffer = buffer[_LENGTH.size + size :]
                if answered == number:  # older answers belong to requests that timed out
                    return value
        return None


def _settings_json(settings: Settings) -> str:
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in settings
    }
    return json.dumps(values, default=str)


# -- the child -----------------------------------------------------------------


def _serve(ring: SharedRing, doorbell: int, reply_fd: int, settings: Settings) -> None:
    """Take frames until the parent asks to close or goes away; send every event.

    The ring is read on the emitter's own event loop: one thread, so reading
    never waits for the interpreter lock behind encoding (or the reverse).
    """
    emitter = Emitter(settings)
    emitter.start()
    try:
        close = emitter.run(_read_ring(emitter, ring, doorbell, reply_fd))
    finally:
        emitter.close()
    if close is not None:
        _answer(reply_fd, close, None)


async def _read_ring(
    emitter: Emitter, ring: SharedRing, doorbell: int, reply_fd: int
) -> int | None:
    """Feed the emitter from the ring; the number of a close request, or None when the
    parent went away."""
    loop = asyncio.get_running_loop()
    os.set_blocking(doorbell, False)
    rung = asyncio.Event()
    loop.add_reader(doorbell, rung.set)
    last_data = time.monotonic()
    parent_gone = False
    try:
        while True:
            for body in ring.take():
                last_data = time.monotonic()
                message = marshal.loads(body)
                if not isinstance(message, list):  # an event frame or a routed record
                    emitter.emit(message)
                    continue
                kind, number, argument = message
                if kind == "close":
                    return int(number)
                answer = (
                    await emitter.drained(within_s=argument)
                    if kind == "flush"
                    else emitter.describe()
                )
                _answer(reply_fd, number, answer)
            if parent_gone:
                return None
            asleep = time.monotonic() - last_data >= _POLL_FOR_S
            ring.set_asleep(asleep)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rung.wait(), _ASLEEP_RECHECK_S if asleep else _POLL_S)
            if rung.is_set():
                rung.clear()
                with contextlib.suppress(BlockingIOError):  # a stale readiness callback
                    # End of file: the parent is gone; take what it left, then stop.
                    parent_gone = not os.read(doorbell, 4096)
    finally:
        loop.remove_reader(doorbell)


def _answer(reply_fd: int, number: int, answer: Any) -> None:
    body = marshal.dumps((number, answer))
    with contextlib.suppress(BrokenPipeError):  # the parent is gone: nobody to answer
        os.write(reply_fd, _LENGTH.pack(len(body)) + body)


def _child_main() -> None:
    logging.basicConfig(format="trc-sender %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # aiokafka's retries too, in this process
        handler.addFilter(RepeatLimit())
    ring_fd, doorbell, reply_fd = map(int, sys.argv[1:4])
    settings = Settings(**json.loads(sys.stdin.read()))
    _serve(SharedRing(ring_fd), doorbell, reply_fd, settings)
