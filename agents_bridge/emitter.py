"""The background producer: the agent's thread only appends to a queue.

Encoding, batching and sending happen on a dedicated thread with its own
event loop and Kafka producer, so emitting costs the agent microseconds and a
slow or absent broker never blocks it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from agents_bridge._loop_thread import LoopThread
from agents_bridge.codec import EncodeError, Record, codec
from agents_bridge.settings import Settings
from agents_bridge.similarity import sketch
from agents_bridge.topics import events_topic

__all__ = ["SKETCH_SOURCE", "Emitter", "EmitterStats"]

_log = logging.getLogger(__name__)
_EVENT = "trc.AgentEvent"

SKETCH_SOURCE = "_sketch_source"
"""Private record key: text whose similarity sketch is computed here, off the agent's thread."""


class EmitterStats:
    """Counters an operator can read: what was queued, sent, dropped or rejected."""

    def __init__(self) -> None:
        self.queued = 0
        self.sent = 0
        self.dropped_queue_full = 0
        self.rejected_invalid = 0
        self.send_errors = 0


class Emitter:
    """Sends :data:`trc.AgentEvent` records to ``trc.events.<agent_id>`` in the background."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queue: collections.deque[Record] = collections.deque()
        self._idle = True
        self._wake: asyncio.Event | None = None
        self._known_topics: set[str] = set()
        self._thread = LoopThread("trc-emitter")
        self._producer: AIOKafkaProducer | None = None
        self._stopping = False
        self._pump: asyncio.Task[None] | None = None
        self.stats = EmitterStats()

    def start(self) -> None:
        self._thread.start()
        self._thread.run(self._start(), timeout=30)

    async def _start(self) -> None:
        self._wake = asyncio.Event()
        self._went_idle = asyncio.Condition()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap_servers,
            acks="all",
            linger_ms=self._settings.emit_linger_ms,
            client_id="trc-bridge-events",
        )
        await self._producer.start()
        self._pump = asyncio.get_running_loop().create_task(self._run())

    def emit(self, record: Record) -> None:
        """Queue ``record``; never blocks. Counted as dropped when the queue is full."""
        if len(self._queue) >= self._settings.emit_queue_size:
            self.stats.dropped_queue_full += 1
            return
        self._queue.append(record)
        self.stats.queued += 1
        if self._idle:
            self._idle = False
            self._thread.loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if self._queue:
                await self._send_batch()
                continue
            self._idle = True
            if self._queue:  # an emit raced us and saw us busy: keep going
                self._idle = False
                continue
            async with self._went_idle:
                self._went_idle.notify_all()
            if self._stopping:
                return
            await self._wake.wait()
            self._wake.clear()

    async def _send_batch(self) -> None:
        assert self._producer is not None
        futures: list[asyncio.Future[Any]] = []
        while self._queue and len(futures) < 10_000:
            record = self._queue.popleft()
            topic = events_topic(record["agent_id"])
            if topic not in self._known_topics:
                await self._ensure_topic(topic)
            source = record.pop(SKETCH_SOURCE, None)
            if source:
                record["tool_args_sketch"] = sketch(source)
            try:
                value = codec.encode(_EVENT, record)
            except EncodeError as exc:
                self.stats.rejected_invalid += 1
                _log.error("dropping invalid event %s: %s", record.get("event_id"), exc)
                continue
            key = record["task_id"].encode()
            futures.append(await self._producer.send(topic, value, key=key))
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                self.stats.send_errors += 1
                _log.error("event send failed: %s", result)
            else:
                self.stats.sent += 1

    async def _ensure_topic(self, topic: str) -> None:
        # Brokers may have auto-creation off; create the agent's topic explicitly.
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=self._settings.partitions,
                        replication_factor=self._settings.replication_factor,
                    )
                ]
            )
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        self._known_topics.add(topic)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far was handed to the broker; False on timeout."""
        deadline = timeout if timeout is not None else self._settings.flush_timeout_s
        try:
            self._thread.run(asyncio.wait_for(self._until_idle(), deadline), timeout=deadline + 1)
        except TimeoutError:
            return False
        return True

    async def _until_idle(self) -> None:
        async with self._went_idle:
            await self._went_idle.wait_for(lambda: self._idle and not self._queue)

    def close(self) -> None:
        """Flush with the configured deadline, then stop the producer and thread."""
        if self._producer is None:
            return
        self.flush()
        self._thread.run(self._stop(), timeout=self._settings.flush_timeout_s + 5)
        self._thread.stop()
        self._producer = None

    async def _stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._pump is not None:
            await self._pump
        assert self._producer is not None
        await self._producer.stop()

    def pending(self) -> int:
        return len(self._queue)

    def describe(self) -> dict[str, Any]:
        return dict(vars(self.stats), pending=self.pending())
