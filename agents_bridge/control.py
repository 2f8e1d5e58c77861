"""The control listener: a dedicated consumer, on its own connection and thread,
that receives commands from ``trc.control`` and applies them to this process's runs.

It never shares a queue with ordinary events, so a kill is not stuck behind a
backlog of step events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents_bridge._loop_thread import LoopThread
from agents_bridge.codec import DecodeError, Record, codec
from agents_bridge.settings import Settings
from agents_bridge.topics import CONTROL

__all__ = ["ControlListener"]

_log = logging.getLogger(__name__)


class ControlListener:
    """Reads every partition of ``trc.control`` from the moment it starts.

    ``on_command`` is called on the listener's thread with each decoded
    ControlCommand; undecodable records are counted and skipped.
    """

    def __init__(self, settings: Settings, on_command: Callable[[Record], None]) -> None:
        self._settings = settings
        self._on_command = on_command
        self._thread = LoopThread("trc-control")
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.rejected = 0

    def start(self) -> None:
        self._thread.start()
        self._thread.run(self._start(), timeout=30)

    async def _start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap_servers,
            client_id="trc-bridge-control",
            enable_auto_commit=False,
            fetch_max_wait_ms=self._settings.control_fetch_max_wait_ms,
        )
        await self._consumer.start()
        partitions = await self._control_partitions()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve positions now: later commands are never missed
            await self._consumer.position(partition)
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _control_partitions(self) -> list[TopicPartition]:
        assert self._consumer is not None
        for _ in range(50):
            partitions = self._consumer.partitions_for_topic(CONTROL)
            if partitions:
                return [TopicPartition(CONTROL, p) for p in sorted(partitions)]
            await self._consumer._client.force_metadata_update()  # topic may be new
            await asyncio.sleep(0.1)
        raise RuntimeError(
            f"topic {CONTROL!r} does not exist on {self._settings.bootstrap_servers}; "
            "start the trc worker (it creates it) or create it with cleanup.policy=compact"
        )

    async def _listen(self) -> None:
        assert self._consumer is not None
        async for message in self._consumer:
            if message.value is None:
                continue  # a tombstone clears a standing command; nothing to apply
            try:
                _, command = codec.decode(message.value, expect="trc.ControlCommand")
            except DecodeError as exc:
                self.rejected += 1
                _log.warning("rejected control record at offset %s: %s", message.offset, exc)
                continue
            try:
                self._on_command(command)
            except Exception:
                _log.exception("applying command %s failed", command.get("command_id"))

    def close(self) -> None:
        if self._consumer is None:
            return
        self._thread.run(self._stop(), timeout=10)
        self._thread.stop()
        self._consumer = None

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        assert self._consumer is not None
        await self._consumer.stop()
