"""The ingest on its own against a real broker of this module's own (the ingest reads
every agent topic there is): what it forwards as agent topics come, and as agent topics
move between workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from agents_bridge import load_settings
from agents_bridge.codec import Record
from agents_bridge.settings import Settings
from agents_bridge.topics import events_topic
from app.ingest import AgentTopicIngest
from tests.integration.conftest import unique
from tests.integration.topic_reader import until
from tests.integration.topic_writer import TopicWriter, agent_event

pytestmark = pytest.mark.integration

_ALL_SHARDS = frozenset(range(4))


class _Forwarded:
    """What an ingest forwarded (the step indexes per agent, in order), dead-lettered, and
    how many agent topics it consumed after each change."""

    def __init__(self) -> None:
        self.steps: dict[str, list[int]] = {}
        self.dead_letters: list[str] = []
        self.topic_counts: list[int] = []

    async def forward(self, batch: list[tuple[Record, bytes]]) -> list[Any]:
        for event, _ in batch:
            self.steps.setdefault(event["agent_id"], []).append(event["step_index"])
        return []

    async def dead_letter(self, record: ConsumerRecord, reason: str, kind: str) -> None:
        self.dead_letters.append(f"{record.topic}@{record.offset}: {reason}")

    def of(self, agent_id: str) -> list[int]:
        return self.steps.get(agent_id, [])


class _Agents(TopicWriter):
    """Agents whose events carry the given step indexes."""

    async def emit(self, agent_id: str, steps: range) -> None:
        await self.send(agent_id, (agent_event(agent_id, step_index=step) for step in steps))


@pytest.fixture
async def agents(quiet_broker: str) -> AsyncIterator[_Agents]:
    async with _Agents(quiet_broker) as started:
        yield started


async def _running(settings: Settings, forwarded: _Forwarded) -> tuple[AgentTopicIngest, Any]:
    ingest = AgentTopicIngest(
        settings, forwarded.forward, forwarded.dead_letter, forwarded.topic_counts.append
    )
    ingest.own(_ALL_SHARDS)
    task = asyncio.create_task(ingest.run())
    await until(lambda: ingest.running, within_s=30, what="the ingest starting")
    return ingest, task


async def _stop(task: Any) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_new_agent_topic_neither_replays_nor_skips_the_others(
    quiet_broker: str, agents: _Agents
) -> None:
    settings = load_settings(bootstrap_servers=quiet_broker, app_id=unique("ingest"))
    first, second = unique("steady"), unique("newcomer")
    await agents.emit(first, range(0, 5))
    forwarded = _Forwarded()
    _, task = await _running(settings, forwarded)
    try:
        await until(lambda: len(forwarded.of(first)) >= 5, within_s=30, what="5 events forwarded")
        for agent_id, steps in ((second, range(0, 3)), (first, range(5, 10))):
            await agents.emit(agent_id, steps)  # the new topic comes between the others
        await until(
            lambda: len(forwarded.of(first)) >= 10 and len(forwarded.of(second)) >= 3,
            within_s=30,
            what="every event of both agents forwarded",
        )
    finally:
        await _stop(task)
    assert forwarded.of(first) == list(range(10))
    assert forwarded.of(second) == list(range(3))
    assert forwarded.dead_letters == []


async def test_a_topic_handed_back_goes_on_from_what_the_other_worker_committed(
    quiet_broker: str, agents: _Agents
) -> None:
    settings = load_settings(bootstrap_servers=quiet_broker, app_id=unique("ingest"))
    agent_id = unique("handed")
    await agents.emit(agent_id, range(0, 3))
    forwarded = _Forwarded()
    ingest, task = await _running(settings, forwarded)
    other = AIOKafkaConsumer(
        bootstrap_servers=quiet_broker,
        group_id=f"{settings.app_id}-ingest",
        enable_auto_commit=False,
    )
    try:
        await until(lambda: forwarded.of(agent_id) == [0, 1, 2], within_s=30, what="3 forwarded")
        ingest.own(frozenset())  # its shard goes to another worker...
        await until(
            lambda: forwarded.topic_counts[-1:] == [0], within_s=30, what="the topic handed over"
        )
        topic = TopicPartition(events_topic(agent_id), 0)
        await agents.emit(agent_id, range(3, 6))
        await other.start()
        other.assign([topic])
        await other.commit({topic: 6})  # ... which forwards steps 3-5 and commits them
        ingest.own(_ALL_SHARDS)  # and hands the shard back
        await agents.emit(agent_id, range(6, 8))
        # A replay of steps 3-5 would come before 6 and 7.
        await until(lambda: len(forwarded.of(agent_id)) >= 5, within_s=30, what="2 more events")
    finally:
        await other.stop()
        await _stop(task)
    assert forwarded.of(agent_id) == [0, 1, 2, 6, 7]
    assert forwarded.dead_letters == []
