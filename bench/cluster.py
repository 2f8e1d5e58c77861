"""A Kafka cluster lent to the benchmarks (``--bootstrap``), given back as it was.

The benchmark's worker detects and kills every agent whose topic it finds, and
reads every agent topic from the start, so the cluster must hold no agent
topics of its own. The benchmarks create their topics explicitly (clusters
often refuse to create topics on first use) and delete them when they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

from aiokafka.admin import AIOKafkaAdminClient

from agents_bridge.settings import load_settings
from agents_bridge.topics import EVENTS_PATTERN
from app.topic_specs import TopicSpec, ensure_topics

__all__ = ["agent_topics", "borrowed", "create_topics"]

_DELETE_WAIT_S = 30.0


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _topics(bootstrap: str) -> set[str]:
    async with _admin(bootstrap) as admin:
        return set(await admin.list_topics())


async def agent_topics(bootstrap: str) -> list[str]:
    """The agent topics the cluster holds."""
    return sorted(t for t in await _topics(bootstrap) if EVENTS_PATTERN.match(t))


async def create_topics(bootstrap: str, names: list[str]) -> None:
    """Create the single-partition topics ``names`` that do not exist yet."""
    settings = load_settings(bootstrap_servers=bootstrap)
    await ensure_topics(settings, [TopicSpec(name, 1) for name in names])


@contextlib.contextmanager
def borrowed(bootstrap: str) -> Iterator[None]:
    """Delete, when the block ends, the topics created while it ran (Kafka's own
    ``__`` topics excepted). Not for use inside a running event loop."""
    before = asyncio.run(_topics(bootstrap))
    try:
        yield
    finally:
        asyncio.run(_delete_created_since(bootstrap, before))


async def _delete_created_since(bootstrap: str, before: set[str]) -> None:
    created = sorted(t for t in await _topics(bootstrap) - before if not t.startswith("__"))
    if not created:
        return
    async with _admin(bootstrap) as admin:
        response = await admin.delete_topics(created)
    failed = [(topic, code) for topic, code in response.topic_error_codes if code]
    if failed:
        raise RuntimeError(f"could not delete the benchmark's topics (error codes): {failed}")
    deadline = time.monotonic() + _DELETE_WAIT_S
    while set(created) & await _topics(bootstrap):  # deletion completes after the answer
        if time.monotonic() > deadline:
            raise RuntimeError(f"the benchmark's topics still exist after {_DELETE_WAIT_S:.0f} s")
        await asyncio.sleep(0.5)
