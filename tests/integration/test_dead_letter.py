"""Malformed input never stops the processor: it is dead-lettered with the reason."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from agents_bridge import AgentKilled, Monitor
from agents_bridge.topics import DEAD_LETTER, events_topic
from tests.integration.conftest import unique
from tests.integration.topic_reader import read_until

pytestmark = pytest.mark.integration


async def test_garbage_is_dead_lettered_and_detection_goes_on(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent_id = unique("poisoned")
    garbage = b"\x00not avro at all"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(events_topic(agent_id), garbage, key=b"x")
    finally:
        await producer.stop()

    letters = await read_until(
        bootstrap_servers,
        DEAD_LETTER,
        lambda seen: any(v and v["source_topic"] == events_topic(agent_id) for _, v in seen),
        what=f"a dead letter for {agent_id}",
    )
    letter = next(v for _, v in letters if v and v["source_topic"] == events_topic(agent_id))
    assert letter["payload"] == garbage
    assert "C3 01" in letter["reason"]

    # The same topic's later, valid events are still processed: a loop is still killed.
    async def looping_agent() -> None:
        async with monitor.run(agent_id) as run:
            for _ in range(3):
                run.tool_call("search", {"q": "same"})
            await asyncio.Event().wait()

    with pytest.raises(AgentKilled):
        await asyncio.wait_for(looping_agent(), timeout=30)
