"""Ingest: every agent's topic, found within the discovery interval, forwarded re-keyed.

Agent topics are assigned to the ingest consumer directly instead of through a
group pattern subscription: with one topic per agent, every new agent would
otherwise stop the whole consumer group for a rebalance (seconds on Tansu,
hundreds of milliseconds on Kafka), and a fleet that starts 1,000 agents would
never stop rebalancing. Offsets are committed under their own group id after
the forwarded records are acknowledged, so nothing is lost across restarts.

Several workers share the agent topics by shard: a topic belongs to the worker
that Faust assigned the re-keyed topic's partition ``shard_of(topic)`` to, so
a worker that dies hands its agents over with its partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, ConsumerRecord, TopicPartition

from agents_bridge.codec import DecodeError, Record, codec
from agents_bridge.settings import Settings, SettingsError
from agents_bridge.topics import EVENTS_PATTERN, EVENTS_PREFIX

__all__ = ["AgentTopicIngest", "invalid_reason", "shard_of"]

_log = logging.getLogger(__name__)

_LAG_INTERVAL_S = 1.0
"""How often the ingest's lag (records not read yet) is reported."""

_COMMIT_INTERVAL_S = 0.1
"""Offsets are committed at most this often: a restart replays at most this much,
which the detectors' event-id deduplication absorbs."""

Forward = Callable[[list[tuple[Record, bytes]]], Awaitable[list[Any]]]
"""(decoded event, raw value) pairs of one batch, in order -> awaitables that resolve
when the broker acknowledged what was forwarded."""
DeadLetter = Callable[[ConsumerRecord, str, str], Awaitable[None]]
"""(record, reason, reason kind) -> sent to the dead-letter topic."""


def shard_of(topic: str, shards: int) -> int:
    """The shard an agent topic belongs to: stable across processes and restarts."""
    return zlib.crc32(topic.encode()) % shards


def invalid_reason(topic: str, event: Record) -> str | None:
    """Why a decodable event cannot be used, or None. Pure."""
    for key in ("event_id", "agent_id", "task_id", "correlation_id", "event_type"):
        if not event.get(key):
            return f"field {key!r} is empty"
    if topic != EVENTS_PREFIX + event["agent_id"]:
        return f"agent_id {event['agent_id']!r} does not match its topic {topic!r}"
    if event["emitted_at"] <= 0:
        return f"emitted_at {event['emitted_at']} is not a timestamp"
    for key in ("prompt_tokens", "completion_tokens", "retry_count"):
        if event.get(key, 0) < 0:
            return f"{key} is negative ({event[key]})"
    if (event.get("duration_ms") or 0) < 0:
        return f"duration_ms is negative ({event['duration_ms']})"
    return None


class AgentTopicIngest:
    """Consumes ``trc.events.*``; hands each batch's valid events, in order, to ``forward``."""

    def __init__(
        self,
        settings: Settings,
        forward: Forward,
        dead_letter: DeadLetter,
        on_topics: Callable[[int], None] = lambda _: None,
        on_lag: Callable[[int], None] = lambda _: None,
        rekeyed_topics: Collection[str] = (),
    ) -> None:
        self._settings = settings
        self._forward = forward
        self._dead_letter = dead_letter
        self._on_topics = on_topics
        self._on_lag = on_lag
        self._lag_reported = 0.0
        self._read_up_to: dict[TopicPartition, int] = {}
        """Offset after the last record forwarded, per partition read from so far."""
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._topics: set[str] = set()
        self._shards = settings.partitions
        self._rekeyed = tuple(rekeyed_topics)
        """Topics whose partitions must number ``settings.partitions`` (shards and tables
        are computed from the setting)."""
        self._owned: frozenset[int] | None = None
        """Shards this worker ingests; None until the first assignment is known."""
        self._reassign = False
        self.running = False

    def own(self, shards: frozenset[int]) -> None:
        """The shards this worker now owns (from its share of the re-keyed topic)."""
        if shards != self._owned:
            self._owned = shards
            self._reassign = True

    async def run(self) -> None:
        """Consume until cancelled; the consumer is closed on the way out."""
        settings = self._settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=f"{settings.app_id}-ingest",
            client_id=f"{settings.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            **settings.kafka_security(),
        )
        # Discovery reads whole-cluster metadata on its own client connection.
        self._metadata = AIOKafkaClient(
            bootstrap_servers=settings.bootstrap_servers, **settings.kafka_security()
        )
        await self._metadata.bootstrap()
        await self._consumer.start()
        try:
            await self._discover()
            self.running = True
            next_discovery = time.monotonic()
            interval = self._settings.topic_discovery_interval_ms / 1000
            while True:
                if time.monotonic() >= next_discovery or self._reassign:
                    await self._discover()
                    next_discovery = time.monotonic() + interval
                if not self._topics:
                    await asyncio.sleep(interval)
                    continue
                batches = await self._consumer.getmany(
                    timeout_ms=self._settings.topic_discovery_interval_ms, max_records=20_000
                )
                if batches:
                    try:
                        await self._process(batches)
                    except Exception:
                        # Nothing of the failed batch was committed: rewind and retry it.
                        _log.exception("forwarding a batch failed; retrying it in 1 s")
                        await self._rewind()
                        await asyncio.sleep(1.0)
                if time.monotonic() - self._last_commit >= _COMMIT_INTERVAL_S:
                    await self._commit()
                if time.monotonic() - self._lag_reported >= _LAG_INTERVAL_S:
                    self._report_lag()
        finally:
            self.running = False
            await self._commit()
            await self._consumer.stop()
            await self._metadata.close()

    async def topic_exists(self, topic: str) -> bool:
        """Whether ``topic`` exists in the cluster (fresh metadata, any worker's shard)."""
        if topic in self._topics:
            return True
        cluster = await self._metadata.fetch_all_metadata()
        return topic in cluster.topics()

    async def _discover(self) -> None:
        cluster = await self._metadata.fetch_all_metadata()
        self._check_partitions(cluster)
        owned = self._owned or frozenset()
        topics = {
            t
            for t in cluster.topics()
            if EVENTS_PATTERN.match(t) and shard_of(t, self._shards) in owned
        }
        if topics == self._topics and not self._reassign:
            return
        new = topics - self._topics
        self._topics = topics
        self._reassign = False
        partitions = [
            TopicPartition(topic, partition)
            for topic in sorted(self._topics)
            for partition in sorted(cluster.partitions_for_topic(topic) or ())
        ]
        await self._commit()
        kept = self._consumer.assignment() & set(partitions)
        self._consumer.assign(partitions)
        # Partitions held throughout go on from where this loop is (what it committed)
        # instead of asking the broker for every committed offset again: with agents
        # coming and going that was every discovery, and the kill p99 of the agents
        # already there went from 0.3 s to 5-6 s (bench.run kill --churn 3). The others
        # start from the committed offsets (another worker may have moved them on).
        self._read_up_to = {tp: o for tp, o in self._read_up_to.items() if tp in kept}
        for tp, offset in self._read_up_to.items():
            self._consumer.seek(tp, offset)
        self._on_topics(len(self._topics))
        _log.info("consuming %d agent topics (new: %s)", len(self._topics), ", ".join(sorted(new)))

    def _check_partitions(self, cluster: Any) -> None:
        for topic in self._rekeyed:
            found = cluster.partitions_for_topic(topic)
            if found and len(found) != self._shards:
                raise SettingsError(
                    f"TRC_PARTITIONS is {self._shards} but {topic} has {len(found)} "
                    f"partitions: set TRC_PARTITIONS={len(found)}, or choose a new "
                    f"TRC_APP_ID to start over with {self._shards} (deploy/README.md, Upgrades)"
                )

    def _report_lag(self) -> None:
        # From what this loop knows, without asking the consumer (position() can block).
        self._lag_reported = time.monotonic()
        lag = 0
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)  # known once a fetch answered for tp
            if highwater is not None and tp in self._read_up_to:
                lag += max(0, highwater - self._read_up_to[tp])
        self._on_lag(lag)

    async def _process(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        valid: list[tuple[Record, bytes]] = []
        offsets = {}
        for tp, records in batches.items():
            for record in records:
                try:
                    _, event = codec.decode(record.value or b"", expect="trc.AgentEvent")
                except DecodeError as exc:
                    await self._dead_letter(record, exc.reason, "undecodable")
                    continue
                reason = invalid_reason(record.topic, event)
                if reason is not None:
                    await self._dead_letter(record, reason, "invalid")
                    continue
                valid.append((event, record.value or b""))
            offsets[tp] = records[-1].offset + 1
        if valid:
            await asyncio.gather(*await self._forward(valid))
        self._uncommitted.update(offsets)  # forwarded and acknowledged: safe to commit
        self._read_up_to.update(offsets)

    async def _rewind(self) -> None:
        await self._commit()  # what was acknowledged before the failure
        self._consumer.assign(list(self._consumer.assignment()))  # back to committed offsets

    async def _commit(self) -> None:
        if self._uncommitted:
            await self._consumer.commit(self._uncommitted)
            self._uncommitted = {}
        self._last_commit = time.monotonic()
