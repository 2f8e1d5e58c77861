"""The control listener: a dedicated consumer, on its own connection and thread,
that receives commands from ``trc.control`` and applies them to this process's runs.

It never shares a queue with ordinary events, so a kill is not stuck behind a
backlog of step events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from agents_bridge._loop_thread import LoopThread
from agents_bridge.codec import DecodeError, Record, codec
from agents_bridge.settings import Settings
from agents_bridge.topics import CONTROL

__all__ = ["ControlListener"]

_log = logging.getLogger(__name__)


class ControlListener:
    """Reads every partition of ``trc.control``: first its history, then live.

    ``on_command(command, live)`` is called on the listener's thread with each
    decoded ControlCommand (``live`` is False for the history read at start);
    ``on_clear(key)`` with the key of each tombstone. Undecodable records are
    counted and skipped.
    """

    def __init__(
        self,
        settings: Settings,
        on_command: Callable[[Record, bool], None],
        on_clear: Callable[[str], None],
    ) -> None:
        self._settings = settings
        self._on_command = on_command
        self._on_clear = on_clear
        self._thread = LoopThread("trc-control")
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.rejected = 0
        self.attached = threading.Event()
        """Set once the standing commands are read: every later one reaches this process."""

    def start(self, attach_timeout_s: float = 10.0) -> bool:
        """Connect; wait up to ``attach_timeout_s`` for ``trc.control`` to be attached.

        Returns False if the topic is not there yet; the listener keeps trying in
        the background (an agent may start before the cluster does).
        """
        self._thread.start()
        self._thread.run(self._start(), timeout=30)
        return self.attached.wait(attach_timeout_s)

    async def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._attach_and_listen())

    async def _connect(self) -> AIOKafkaConsumer:
        warned = False
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.bootstrap_servers,
                client_id="trc-bridge-control",
                **self._settings.kafka_security(),
                enable_auto_commit=False,
                fetch_max_wait_ms=self._settings.control_fetch_max_wait_ms,
            )
            try:
                await consumer.start()
                return consumer
            except (KafkaError, OSError) as exc:
                await consumer.stop()
                if not warned:
                    _log.warning(
                        "control listener cannot reach %s (%s); retrying",
                        self._settings.bootstrap_servers,
                        exc,
                    )
                    warned = True
                await asyncio.sleep(1.0)

    async def _attach_and_listen(self) -> None:
        self._consumer = await self._connect()
        partitions = await self._control_partitions()
        self._consumer.assign(partitions)
        await self._catch_up(partitions)
        self.attached.set()
        await self._listen()

    async def _catch_up(self, partitions: list[TopicPartition]) -> None:
        """Read the compacted history: the commands still standing reach this process."""
        assert self._consumer is not None
        await self._consumer.seek_to_beginning(*partitions)
        end = await self._consumer.end_offsets(partitions)
        deadline = time.monotonic() + self._settings.command_history_scan_s
        while time.monotonic() < deadline:
            behind = [tp for tp in partitions if await self._consumer.position(tp) < end[tp]]
            if not behind:
                return
            batches = await self._consumer.getmany(*behind, timeout_ms=200)
            for records in batches.values():
                for message in records:
                    self._deliver(message, live=False)
        _log.warning(
            "reading the standing commands on %s took over %.0f s; later ones may be missed "
            "until they are issued again",
            CONTROL,
            self._settings.command_history_scan_s,
        )
        await self._consumer.seek_to_end(*partitions)

    async def _control_partitions(self) -> list[TopicPartition]:
        assert self._consumer is not None
        warned = False
        while True:
            partitions = self._consumer.partitions_for_topic(CONTROL)
            if partitions:
                return [TopicPartition(CONTROL, p) for p in sorted(partitions)]
            if not warned:
                _log.warning(
                    "topic %r does not exist on %s yet; waiting for the trc worker to create it",
                    CONTROL,
                    self._settings.bootstrap_servers,
                )
                warned = True
            await self._consumer._client.force_metadata_update()  # no public refresh
            await asyncio.sleep(0.5)

    async def _listen(self) -> None:
        assert self._consumer is not None
        async for message in self._consumer:
            self._deliver(message, live=True)

    def _deliver(self, message: ConsumerRecord, *, live: bool) -> None:
        if message.value is None:  # a tombstone: nothing stands for this target any more
            self._on_clear((message.key or b"").decode(errors="replace"))
            return
        try:
            _, command = codec.decode(message.value, expect="trc.ControlCommand")
        except DecodeError as exc:
            self.rejected += 1
            _log.warning("rejected control record at offset %s: %s", message.offset, exc)
            return
        try:
            self._on_command(command, live)
        except Exception:
            _log.exception("applying command %s failed", command.get("command_id"))

    def close(self) -> None:
        if self._task is None:
            return
        self._thread.run(self._stop(), timeout=10)
        self._thread.stop()
        self._task = None
        self._consumer = None

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
