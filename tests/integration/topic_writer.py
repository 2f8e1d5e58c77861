"""Write agent events straight to their topics, as the bridge would, without a Monitor:
for tests that need exact records (the same event twice, chosen step indexes)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from agents_bridge import load_settings
from agents_bridge.clock import now_us
from agents_bridge.codec import Record, codec
from agents_bridge.topics import events_topic
from app.topic_specs import TopicSpec, ensure_topics


def agent_event(agent_id: str, **fields: Any) -> Record:
    """A minimal valid event of ``agent_id`` (a step of its task), ``fields`` on top."""
    return {
        "event_id": uuid.uuid4().hex,
        "event_type": "step_start",
        "agent_id": agent_id,
        "task_id": f"{agent_id}-task",
        "correlation_id": f"{agent_id}-task",
        "emitted_at": now_us(),
        **fields,
    }


class TopicWriter:
    """Sends events in order to their agent's topic, one partition each as the bridge makes."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._settings = load_settings(bootstrap_servers=bootstrap_servers)
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")

    async def send(self, agent_id: str, events: Iterable[Record]) -> None:
        topic = events_topic(agent_id)
        await ensure_topics(self._settings, [TopicSpec(topic, 1)])
        for event in events:
            await self._producer.send_and_wait(topic, codec.encode("trc.AgentEvent", event))

    async def __aenter__(self) -> TopicWriter:
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()
