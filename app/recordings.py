"""Recorded agent events: read back from the agent topics or from an exported file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import fastavro
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition

from agents_bridge.codec import DecodeError, codec
from agents_bridge.topics import EVENTS_PATTERN

__all__ = ["read_file", "read_records", "read_topics", "read_topics_with_progress"]

Progress = Callable[[int, int], None]
"""(records done, records in all) -> None."""


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    """AgentEvents from an Avro container file (``.avro``) or JSON lines (anything else)."""
    if path.suffix == ".avro":
        with path.open("rb") as stream:
            for record in fastavro.reader(stream, reader_schema=codec.schema("trc.AgentEvent")):
                yield cast(dict[str, Any], record)
        return
    with path.open() as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON object: {exc}") from None


async def read_records(
    bootstrap_servers: str,
    select: Callable[[str], object],
    expect: str,
    progress: Progress = lambda done, total: None,
    **client_options: Any,
) -> list[dict[str, Any]]:
    """Every decodable ``expect`` record of the topics ``select`` picks, up to the end
    offsets seen at the start. ``client_options`` go to the Kafka clients (TLS, SASL)."""
    metadata = AIOKafkaClient(bootstrap_servers=bootstrap_servers, **client_options)
    await metadata.bootstrap()
    try:
        cluster = await metadata.fetch_all_metadata()
    finally:
        await metadata.close()
    partitions = [
        TopicPartition(topic, p)
        for topic in sorted(t for t in cluster.topics() if select(t))
        for p in sorted(cluster.partitions_for_topic(topic) or ())
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, **client_options
    )
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        if not partitions:
            return records
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        starts = {tp: await consumer.position(tp) for tp in partitions}
        ends = await consumer.end_offsets(partitions)
        total = sum(ends[tp] - starts[tp] for tp in partitions)
        pending = {tp for tp in partitions if ends[tp] > starts[tp]}
        done = 0
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, batch in batches.items():
                # No cut at ends[tp]: Tansu reports an end offset inside the last record
                # batch (one per batch, not per record), so a cut there loses records.
                for record in batch:
                    done += 1
                    # Undecodable records are the worker's to dead-letter; readers skip them.
                    with contextlib.suppress(DecodeError):
                        records.append(codec.decode(record.value or b"", expect=expect)[1])
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
            progress(done, total)
        return records
    finally:
        await consumer.stop()


async def read_topics(
    bootstrap_servers: str, progress: Progress, **client_options: Any
) -> list[dict[str, Any]]:
    """Every decodable event on ``trc.events.*`` up to the end offsets seen at the start."""
    return await read_records(
        bootstrap_servers, EVENTS_PATTERN.match, "trc.AgentEvent", progress, **client_options
    )


def read_topics_with_progress(
    bootstrap_servers: str, timeout_s: float | None = None, **client_options: Any
) -> list[dict[str, Any]]:
    """:func:`read_topics` from synchronous code, with a progress bar on stderr."""
    from tqdm import tqdm

    with tqdm(
        desc=f"reading trc.events.* from {bootstrap_servers}", unit=" events", file=sys.stderr
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        reading = read_topics(bootstrap_servers, progress, **client_options)
        return asyncio.run(asyncio.wait_for(reading, timeout_s))
