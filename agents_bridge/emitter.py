"""The background producer: the agent's thread only appends to a queue.

Encoding, batching and sending happen on a dedicated thread with its own event
loop and Kafka producer, so emitting costs the agent microseconds and a slow
or absent broker never blocks it.

When the broker cannot be reached, or the queue grows past its bound, events
spill to the on-disk journal in emission order, and every later event follows
them there until the journal has been replayed to the broker, so per-agent
order holds across an outage. Events are keyed by agent id: one partition per
agent, one order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.transaction import InitProducerIdRequest

from agents_bridge._loop_thread import LoopThread
from agents_bridge.codec import EncodeError, Record, codec
from agents_bridge.event_frame import EventFrame, FrameExpander
from agents_bridge.journal import Journal, JournalEntry
from agents_bridge.log_limit import RepeatLimit
from agents_bridge.settings import Settings
from agents_bridge.similarity import sketch
from agents_bridge.topics import events_topic

__all__ = ["ROUTE", "SKETCH_SOURCE", "Emitter", "EmitterStats"]

_log = logging.getLogger(__name__)
_log.addFilter(RepeatLimit())  # a retry every half second must not flood the agent's logs
T = TypeVar("T")
_EVENT = "trc.AgentEvent"
_BATCH = 5_000
_RETRY_S = 0.5
_POLL_FOR_S = 2.0
"""After a batch, the pump polls the queue this long before it waits to be woken."""

SKETCH_SOURCE = "_sketch_source"
"""Private record key: text whose similarity sketch is computed here, off the agent's thread."""
ROUTE = "_route"
"""Private record key: (schema, topic, key) of a record that is not an agent event."""


class EmitterStats:
    """Counters an operator can read: what was queued, sent, spilled, dropped or rejected."""

    def __init__(self) -> None:
        self.queued = 0
        self.sent = 0
        self.spilled = 0
        self.replayed = 0
        self.dropped_queue_full = 0
        self.dropped_journal_full = 0
        self.rejected_invalid = 0
        self.send_errors = 0


class Emitter:
    """Sends AgentEvent records to ``trc.events.<agent_id>`` in the background."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queue: collections.deque[Record | EventFrame] = collections.deque()
        self._frames = FrameExpander()
        self._hard_limit = settings.emit_queue_size * 4
        self._idle = True
        """The pump waits to be woken (it polls the queue while recently busy)."""
        self._handling = False
        # Bound to the sender's loop when first awaited there (Python >= 3.10), so
        # events emitted before start() are safe.
        self._wake = asyncio.Event()
        self._went_idle = asyncio.Condition()
        self._known_topics: set[str] = set()
        self._thread = LoopThread("trc-emitter")
        self._producer: AIOKafkaProducer | None = None
        self._journal = Journal(settings.journal_dir, settings.journal_max_bytes)
        self._spilling = self._journal.pending()  # a backlog from an earlier run goes first
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.idempotent: bool | None = None
        self.stats = EmitterStats()

    # -- agent thread ----------------------------------------------------------

    def emit(self, item: Record | EventFrame) -> None:
        """Queue an event frame or a routed record; never blocks. Dropped (and counted)
        only past the hard bound."""
        if len(self._queue) >= self._hard_limit:
            self.stats.dropped_queue_full += 1
            return
        self._queue.append(item)
        self.stats.queued += 1
        if self._idle:
            self._idle = False
            self._thread.loop.call_soon_threadsafe(self._wake_up)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; connects in the background if the broker is not there yet."""
        self._thread.start()
        self._thread.run(self._start(), timeout=30)

    async def _start(self) -> None:
        await self._connect()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._pump()), loop.create_task(self._replay())]

    async def _connect(self) -> bool:
        if self._producer is not None:
            return True
        servers = self._settings.bootstrap_servers
        try:
            if self.idempotent is None:
                self.idempotent = await _supports_idempotence(self._settings)
                if not self.idempotent:
                    _log.warning(
                        "the broker at %s refuses InitProducerId: sending without the "
                        "idempotent producer (acks=all); consumers deduplicate by event_id",
                        servers,
                    )
            producer = AIOKafkaProducer(
                bootstrap_servers=servers,
                acks="all",
                enable_idempotence=self.idempotent,
                linger_ms=self._settings.emit_linger_ms,
                request_timeout_ms=int(self._settings.send_timeout_s * 1000),
                client_id="trc-bridge-events",
                **self._settings.kafka_security(),
            )
            await asyncio.wait_for(producer.start(), self._settings.send_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            _log.warning(
                "broker %s unreachable (%s); events spill to %s",
                servers,
                exc,
                self._settings.journal_dir,
            )
            self._spilling = True
            return False
        self._producer = producer
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far was sent or journaled; False on timeout."""
        deadline = timeout if timeout is not None else self._settings.flush_timeout_s
        try:
            return self._thread.run(self.drained(within_s=deadline), timeout=deadline + 1)
        except TimeoutError:
            return False

    async def drained(self, *, within_s: float) -> bool:
        """:meth:`flush` for code running on the sender's own loop (see :meth:`run`)."""
        try:
            await asyncio.wait_for(self._until_idle(), within_s)
        except TimeoutError:
            return False
        return True

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the sender's loop, alongside the sending, and wait for it."""
        return self._thread.run(coro)

    def close(self) -> None:
        """Flush with the configured deadline; what is left goes to the journal."""
        if not self._tasks:
            return
        self.flush()
        self._thread.run(self._stop(), timeout=self._settings.flush_timeout_s + 10)
        self._thread.stop()
        self._tasks = []

    async def _stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        leftovers = [self._entry(r) for r in self._drain_queue(len(self._queue))]
        self._spill([e for e in leftovers if e is not None])
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # -- emitter thread --------------------------------------------------------

    def _wake_up(self) -> None:
        self._wake.set()

    async def _until_idle(self) -> None:
        async with self._went_idle:
            await self._went_idle.wait_for(lambda: not self._queue and not self._handling)

    async def _pump(self) -> None:
        poll_s = max(self._settings.emit_linger_ms, 1) / 1000
        last_batch = -_POLL_FOR_S
        while True:
            if self._queue:
                self._handling = True
                try:
                    await self._handle(self._drain_queue(_BATCH))
                finally:
                    self._handling = False
                last_batch = time.monotonic()
                async with self._went_idle:
                    self._went_idle.notify_all()
                continue
            if time.monotonic() - last_batch < _POLL_FOR_S:
                # Recently busy: look at the queue again shortly rather than be woken.
                # Waking this thread costs the emitting agent thread ~0.7 ms (measured
                # on a 2-core VM: the syscall hands the interpreter lock over), once per
                # burst; a poll costs it nothing while the agent waits on its model.
                await asyncio.sleep(poll_s)
                continue
            self._idle = True
            if self._queue:  # an emit raced us and saw us busy: keep going
                self._idle = False
                continue
            await self._wake.wait()
            self._wake.clear()
            # Let the agent finish the burst it is emitting (a step is several events)
            # before taking the interpreter lock to encode and send them in one batch.
            await asyncio.sleep(poll_s)

    def _drain_queue(self, limit: int) -> list[Record | EventFrame]:
        batch: list[Record | EventFrame] = []
        while self._queue and len(batch) < limit:
            batch.append(self._queue.popleft())
        return batch

    def _entry(self, item: Record | EventFrame) -> JournalEntry | None:
        record = self._frames.record(item) if isinstance(item, tuple) else item
        schema, topic, key = record.pop(ROUTE, None) or (
            _EVENT,
            events_topic(record["agent_id"]),
            record["agent_id"],
        )
        source = record.pop(SKETCH_SOURCE, None)
        if source:
            record["tool_args_sketch"] = sketch(source)
        try:
            value = codec.encode(schema, record)
        except EncodeError as exc:
            self.stats.rejected_invalid += 1
            _log.error("dropping a %s that does not fit the schema: %s", schema, exc)
            return None
        return topic, key.encode(), value

    async def _handle(self, items: list[Record | EventFrame]) -> None:
        entries = [e for e in map(self._entry, items) if e is not None]
        over_bound = len(self._queue) > self._settings.emit_queue_size
        if self._spilling or over_bound or self._producer is None:
            if not self._spilling:
                self._known_topics.clear()
            self._spilling = True
            self._spill(entries)
            return
        failed = await self._send(entries)
        if failed:
            self._spilling = True
            # A broker that comes back may have lost its topics (the embedded one keeps
            # them in memory): create them again before replaying.
            self._known_topics.clear()
            self._spill(failed)

    def _spill(self, entries: list[JournalEntry]) -> None:
        refused = self._journal.append(entries)
        self.stats.spilled += len(entries) - refused
        if refused:
            self.stats.dropped_journal_full += refused
            _log.error(
                "spill journal full (%d bytes): %d events dropped",
                self._settings.journal_max_bytes,
                refused,
            )

    async def _send(self, entries: list[JournalEntry]) -> list[JournalEntry]:
        """Send ``entries``; return those that failed, in order."""
        assert self._producer is not None
        futures = []
        for topic, key, value in entries:
            try:
                if topic not in self._known_topics:
                    await asyncio.wait_for(self._ensure_topic(topic), self._settings.send_timeout_s)
                futures.append(await self._producer.send(topic, value, key=key))
            except (KafkaError, OSError, TimeoutError) as exc:
                _log.warning("sending events failed: %s", exc)
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [
            e for e, r in zip(entries, results, strict=False) if isinstance(r, BaseException)
        ] + entries[len(futures) :]
        self.stats.sent += len(entries) - len(failed)
        if failed:
            self.stats.send_errors += len(failed)
            _log.warning("%d events not acknowledged; they wait in the journal", len(failed))
        return failed

    async def _replay(self) -> None:
        """While spilling: reconnect, replay the journal in order, then resume direct sends."""
        while True:
            await asyncio.sleep(_RETRY_S)
            if not self._spilling or not await self._connect():
                continue
            entries, position = self._journal.read(_BATCH)
            if not entries:
                if not self._queue or len(self._queue) <= self._settings.emit_queue_size:
                    self._spilling = False  # the pump sends directly again
                    _log.warning("journal replayed; sending directly again")
                continue
            started = time.monotonic()
            failed = await self._send(entries)
            if failed:
                continue  # still down: try again later, from the same position
            self._journal.mark_replayed(position)
            self.stats.replayed += len(entries)
            _log.info(
                "replayed %d journaled events in %.0f ms",
                len(entries),
                (time.monotonic() - started) * 1000,
            )

    async def _ensure_topic(self, topic: str) -> None:
        # Brokers may have auto-creation off; create the agent's topic explicitly.
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.bootstrap_servers,
            request_timeout_ms=int(self._settings.send_timeout_s * 1000),
            **self._settings.kafka_security(),
        )
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=1,  # keyed by agent: one partition, one order
                        replication_factor=self._settings.replication_factor,
                    )
                ]
            )
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        self._known_topics.add(topic)

    def pending(self) -> int:
        return len(self._queue)

    def describe(self) -> dict[str, Any]:
        return dict(
            vars(self.stats),
            pending=self.pending(),
            spilling=self._spilling,
            journal_backlog=self._journal.pending(),
            idempotent=self.idempotent,
        )


async def _supports_idempotence(settings: Settings) -> bool:
    """Ask for a producer id: brokers without the idempotent producer refuse it."""
    client = AIOKafkaClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_security()
    )
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        response = await client.send(node, InitProducerIdRequest(None, 60_000))
        return bool(response.error_code == 0)
    finally:
        await client.close()
