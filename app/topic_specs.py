"""The topics the cluster app owns, with their settings, created at worker start."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from agents_bridge.settings import Settings
from agents_bridge.topics import ANOMALIES, AUDIT, CHECKPOINTS, CONTROL, DEAD_LETTER, ESCALATIONS

_30_DAYS_MS = 30 * 24 * 3600 * 1000

__all__ = ["TopicSpec", "ensure_topics", "owned_topics"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def owned_topics(partitions: int) -> list[TopicSpec]:
    """trc.control is compacted: the latest command per target is kept for restarts.

    The audit trail and escalations have one partition: one total order to read.
    """
    return [
        TopicSpec(CONTROL, partitions, {"cleanup.policy": "compact"}),
        TopicSpec(ANOMALIES, partitions, {"retention.ms": str(7 * 24 * 3600 * 1000)}),
        TopicSpec(DEAD_LETTER, 1, {"retention.ms": str(14 * 24 * 3600 * 1000)}),
        TopicSpec(CHECKPOINTS, partitions, {"retention.ms": str(_30_DAYS_MS)}),
        TopicSpec(ESCALATIONS, 1, {"retention.ms": str(_30_DAYS_MS)}),
        TopicSpec(AUDIT, 1, {"retention.ms": str(_30_DAYS_MS)}),
    ]


async def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> None:
    """Create each topic that does not exist yet; existing ones are left as they are."""
    replication_factor = settings.replication_factor
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **settings.kafka_security()
    )
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
