"""Read a topic from the beginning until a condition holds, bounded in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from agents_bridge.codec import codec


async def read_until(
    bootstrap_servers: str,
    topic: str,
    done: Callable[[list[tuple[ConsumerRecord, dict[str, Any] | None]]], bool],
    *,
    within_s: float = 20.0,
    what: str = "the expected records",
) -> list[tuple[ConsumerRecord, dict[str, Any] | None]]:
    """Decoded (record, value) pairs of ``topic`` once ``done(pairs)`` is true.

    Values that are not our Avro records decode to None. Fails the test with
    ``what`` and what was seen if the condition does not hold in ``within_s``.
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: list[tuple[ConsumerRecord, dict[str, Any] | None]] = []
    deadline = time.monotonic() + within_s
    try:
        while not done(seen):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} did not appear on {topic} within {within_s:.0f} s; "
                    f"saw {len(seen)} records: {[v for _, v in seen][-5:]}"
                )
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        _, value = codec.decode(record.value or b"")
                    except ValueError:
                        value = None
                    seen.append((record, value))
        return seen
    finally:
        await consumer.stop()


async def until(condition: Callable[[], bool], *, within_s: float, what: str) -> None:
    """Await ``condition`` on the running loop, failing clearly after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within_s:.0f} s")
        await asyncio.sleep(0.01)
