"""The topics the cluster app owns, with their settings, created at worker start."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from agents_bridge.topics import ANOMALIES, CONTROL, DEAD_LETTER

__all__ = ["TopicSpec", "ensure_topics", "owned_topics"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def owned_topics(partitions: int) -> list[TopicSpec]:
    """trc.control is compacted: the latest command per target is kept for restarts."""
    return [
        TopicSpec(CONTROL, partitions, {"cleanup.policy": "compact"}),
        TopicSpec(ANOMALIES, partitions, {"retention.ms": str(7 * 24 * 3600 * 1000)}),
        TopicSpec(DEAD_LETTER, 1, {"retention.ms": str(14 * 24 * 3600 * 1000)}),
    ]


async def ensure_topics(
    bootstrap_servers: str, specs: list[TopicSpec], replication_factor: int
) -> None:
    """Create each topic that does not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(s.name, s.partitions, replication_factor, topic_configs=s.config)
            for s in specs
            if s.name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(missing)
    finally:
        await admin.close()
