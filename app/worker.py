"""The Faust worker: wires topics, tables and detectors together. No logic lives here.

agent topics --ingest--> <app_id>-events-by-chain (keyed by correlation id)
  --detect agent--> loop windows table --> policy --> trc.control + trc.anomalies
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import faust
from aiokafka import ConsumerRecord
from faust.web import Request, Response, View

from agents_bridge.clock import now_us
from agents_bridge.codec import DecodeError, codec
from agents_bridge.settings import Settings
from agents_bridge.topics import ANOMALIES, DEAD_LETTER
from app.commands import CommandPublisher, kill_command
from app.detectors import Finding, LoopConfig, LoopWindow, detect_loop
from app.ingest import AgentTopicIngest
from app.metrics import Metrics
from app.policy import decide
from app.topic_specs import ensure_topics, owned_topics
from app.transport import FETCH_MAX_WAIT_ATTR, SCHEME

__all__ = ["create_app"]

_log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings``; each app id is its own consumer group."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"{SCHEME}://{server}" for server in settings.bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(settings.data_dir),
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_session_timeout_s / 6,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=0,
        stream_wait_empty=False,
    )
    setattr(app, FETCH_MAX_WAIT_ATTR, settings.fetch_max_wait_ms)
    metrics = Metrics()
    loop_config = LoopConfig(settings.loop_max_repeats, settings.loop_window_s)
    by_chain = app.topic(
        f"{settings.app_id}-events-by-chain",
        key_serializer="raw",
        value_serializer="raw",
        internal=True,
        partitions=settings.partitions,
    )
    anomalies = app.topic(ANOMALIES, key_serializer="raw", value_serializer="raw")
    dead_letters = app.topic(DEAD_LETTER, key_serializer="raw", value_serializer="raw")
    loop_windows = app.Table(
        f"{settings.app_id}-loop-windows",
        default=None,
        key_type=str,
        partitions=settings.partitions,
    )
    commands = CommandPublisher(settings.bootstrap_servers, client_id=f"{settings.app_id}-control")
    state: dict[str, Any] = {"ingest": None, "assigned": False}

    async def forward(key: bytes, value: bytes) -> Any:
        return await by_chain.send(key=key, value=value)

    async def dead_letter(record: ConsumerRecord, error: DecodeError) -> None:
        metrics.dead_letters.labels(reason="undecodable").inc()
        _log.warning(
            "dead-lettering %s[%s]@%s: %s",
            record.topic,
            record.partition,
            record.offset,
            error.reason,
        )
        await dead_letters.send(
            key=record.key,
            value=codec.encode(
                "trc.DeadLetter",
                {
                    "reason": error.reason,
                    "source_topic": record.topic,
                    "source_partition": record.partition,
                    "source_offset": record.offset,
                    "payload": record.value or b"",
                    "failed_at": now_us(),
                },
            ),
        )

    async def respond(finding: Finding) -> None:
        decision = decide(finding)
        anomaly_id = uuid.uuid4().hex
        command_id = None
        if decision.kill:
            command = kill_command(
                "task",
                finding.task_id,
                finding.detail,
                issuer=f"trc/{finding.detector}",
                anomaly_id=anomaly_id,
            )
            await commands.publish(command)
            command_id = command["command_id"]
            metrics.commands_issued.labels(kind="KILL").inc()
        latency_s = (now_us() - finding.trigger_emitted_at) / 1e6
        metrics.detection_latency.observe(latency_s)
        metrics.anomalies.labels(detector=finding.detector, category=decision.category).inc()
        record = {
            "anomaly_id": anomaly_id,
            "detector": finding.detector,
            "category": str(decision.category),
            "severity": decision.severity,
            "agent_id": finding.agent_id,
            "task_id": finding.task_id,
            "correlation_id": finding.correlation_id,
            "detail": finding.detail,
            "evidence_event_ids": list(finding.evidence),
            "detected_at": now_us(),
            "detection_latency_ms": latency_s * 1000,
            "command_id": command_id,
        }
        await anomalies.send(
            key=finding.task_id.encode(), value=codec.encode("trc.Anomaly", record)
        )
        _log.warning(
            "anomaly %s on %s/%s: %s -> %s",
            finding.detector,
            finding.agent_id,
            finding.task_id,
            finding.detail,
            "KILL" if decision.kill else "alert",
        )

    @app.agent(by_chain)
    async def detect(stream: Any) -> None:
        async for value in stream:
            _, event = codec.decode(value, expect="trc.AgentEvent")
            metrics.events_processed.inc()
            if event["event_type"] != "tool_call":
                continue
            window = LoopWindow.from_json(loop_windows.get(event["task_id"]))
            window, finding = detect_loop(window, event, loop_config)
            loop_windows[event["task_id"]] = window.to_json()
            if finding is not None:
                await respond(finding)

    async def run_ingest() -> None:
        await ensure_topics(
            settings.bootstrap_servers,
            owned_topics(settings.partitions),
            settings.replication_factor,
        )
        await commands.start()
        ingest = AgentTopicIngest(settings, forward, dead_letter, metrics.agent_topics.set)
        state["ingest"] = ingest
        try:
            await ingest.run()
        finally:
            await commands.stop()

    async def on_rebalanced(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        state["assigned"] = True

    app.task(run_ingest)
    app.on_rebalance_complete.connect(on_rebalanced)

    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            ingest = state["ingest"]
            ready = bool(ingest and ingest.running and state["assigned"] and not app.rebalancing)
            return self.json({"ready": ready}, status=200 if ready else 503)

    app.page("/metrics")(MetricsView)
    app.page("/healthz")(HealthView)
    app.page("/readyz")(ReadyView)
    return app
