"""How the embedded broker's fetch cost grows with what a partition holds.

    python -m bench.broker [--batches 0 1000 2000 4000 8000]

Fills one partition with single-record batches (as live agents write them:
one small batch per event), then times a produce -> fetch round trip of one
record on it, beside the same round trip on a partition holding one batch
(the baseline, same run). The embedded Tansu broker (memory storage) scans a
partition's batches on every fetch, so every consumer that follows a growing
partition costs the broker more as it grows; Apache Kafka finds an offset
through its index instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.broker import EmbeddedBroker
from bench.stats import machine, report, summarize
from tests.conftest import free_port

__all__ = ["bench_fetch_growth", "round_trips"]

_ROUND_TRIPS = 30


async def round_trips(
    producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, tp: TopicPartition, n: int
) -> list[float]:
    """``n`` times: one record produced to ``tp`` and consumed back, in ms."""
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await producer.send_and_wait(tp.topic, b"probe", partition=tp.partition)
        await consumer.getone()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def bench_fetch_growth(bootstrap: str, sizes: list[int]) -> dict[str, Any]:
    """Round trips (ms) on a partition of ``sizes`` batches, and on a one-batch partition."""
    run = uuid.uuid4().hex[:6]
    growing = TopicPartition(f"bench.growing.{run}", 0)
    fresh = TopicPartition(f"bench.fresh.{run}", 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=5)
    await producer.start()
    await consumer.start()
    figures: dict[str, Any] = {"unit": "ms"}
    try:
        await producer.send_and_wait(fresh.topic, b"one", partition=0)
        written = 0
        for size in sorted(sizes):
            for _ in range(size - written):  # one send at a time: one batch each
                await producer.send_and_wait(growing.topic, b"x" * 200, partition=0)
            written = max(written, size)
            print(f"  {written:,} batches", file=sys.stderr)
            figures[f"produce -> fetch, partition of {size:,} batches"] = summarize(
                await round_trips(producer, consumer, growing, _ROUND_TRIPS)
            )
            figures[f"baseline: partition of 1 batch (after {size:,})"] = summarize(
                await round_trips(producer, consumer, fresh, _ROUND_TRIPS)
            )
    finally:
        await producer.stop()
        await consumer.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[0, 1000, 2000, 4000, 8000])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    with EmbeddedBroker(free_port()) as broker:
        figures = asyncio.run(bench_fetch_growth(broker.bootstrap_servers, args.batches))
    results = {"machine": machine(), "broker": "embedded Tansu", "benchmarks": {"fetch": figures}}
    return report(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
