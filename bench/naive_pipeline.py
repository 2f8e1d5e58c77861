"""The throughput benchmark's baseline: the same detectors wired the naive Faust way.

One Faust agent subscribed to the benchmark's agent topics (those that exist
when it starts: Faust's pattern subscription does not pick topics up on this
driver); per event it
decodes, reads the task's state from a table, runs the engine and writes the
state back (one changelog record per event); no re-keying, no batching, no
chain state, no operator views. Run by ``bench.run throughput`` as

    python -m bench.naive_pipeline     # TRC_* settings from the environment

and read like the real worker: ``/readyz`` and ``trc_events_processed_total``
on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import faust
from aiokafka import AIOKafkaClient
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, Counter, generate_latest

from agents_bridge.codec import codec
from agents_bridge.settings import Settings, load_settings
from app.detectors.latency import ToolBaseline
from app.engine import ChainState, TaskState, process_chain_event
from app.policy import PolicyStore
from app.transport import FETCH_MAX_WAIT_ATTR, SCHEME

__all__ = ["bench_topics", "create_naive_app"]

BENCH_TOPICS = re.compile(r"^trc\.events\.bench-tp-.*")
"""The throughput benchmark's agent topics."""


async def bench_topics(bootstrap_servers: str) -> dict[str, int]:
    """The throughput benchmark's agent topics that exist now, and their partition counts."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
        return {
            t: len(cluster.partitions_for_topic(t) or ())
            for t in sorted(cluster.topics())
            if BENCH_TOPICS.match(t)
        }
    finally:
        await client.close()


def create_naive_app(settings: Settings, topics: dict[str, int]) -> faust.App:
    """A Faust app that runs the detectors per event, the way the docs' examples do."""
    app = faust.App(
        f"{settings.app_id}-naive",
        broker=f"{SCHEME}://{settings.bootstrap_servers}",
        store="memory://",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        topic_partitions=max(topics.values()),
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_session_timeout_s / 6,
        producer_request_timeout=settings.producer_request_timeout_s,
    )
    setattr(app, FETCH_MAX_WAIT_ATTR, settings.fetch_max_wait_ms)
    registry = CollectorRegistry()
    processed = Counter("trc_events_processed", "Events processed.", registry=registry)
    policy = PolicyStore(settings.policy_file).current()
    events = app.topic(*topics, key_serializer="raw", value_serializer="raw")
    tasks = app.Table(f"{settings.app_id}-naive-tasks", default=dict)

    @app.agent(events)
    async def detect(stream: Any) -> None:
        async for value in stream:
            event = codec.decode(value, expect="trc.AgentEvent")[1]
            state = TaskState.from_json(tasks[event["task_id"]])
            task, _, _, _ = process_chain_event(
                state, ChainState(), ToolBaseline(), event, policy.for_agent_type(None)
            )
            tasks[event["task_id"]] = task.to_json()
            processed.inc()

    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(registry), content_type="text/plain")

    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            assigned = bool(app.consumer.assignment())
            return self.json({"ready": assigned}, status=200 if assigned else 503)

    app.page("/metrics")(MetricsView)
    app.page("/readyz")(ReadyView)
    return app


def main() -> None:
    from faust.worker import Worker

    settings = load_settings()
    topics = asyncio.run(bench_topics(settings.bootstrap_servers))
    app = create_naive_app(settings, topics)
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
