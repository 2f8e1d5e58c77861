"""The Faust worker: wires topics, tables and the detection engine. No logic lives here.

agent topics --ingest--> <app_id>-events-by-chain (EventBatches, partitioned by correlation id)
                     \\--> <app_id>-events-by-agent (heartbeats and spend, partitioned by agent id)
by chain: task / chain / tool-baseline tables -> engine -> policy -> respond
by agent: agent table -> engine; a 1 s timer checks every agent for silence
respond: trc.control (own producer, kills first) and trc.anomalies
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import defaultdict
from typing import Any, NamedTuple
from urllib.parse import quote

import faust
from aiokafka import ConsumerRecord
from aiokafka.partitioner import murmur2
from faust.web import Request, Response, View

from agents_bridge.clock import now_us
from agents_bridge.codec import codec
from agents_bridge.settings import Settings
from agents_bridge.topics import ANOMALIES, DEAD_LETTER, events_topic
from app.commands import CommandPublisher, SentCommand, audit_record, new_command
from app.control_api import ControlApi
from app.detectors.latency import ToolBaseline
from app.engine import (
    AgentState,
    ChainState,
    Outcome,
    TaskState,
    check_agent,
    process_agent_event,
    process_chain_event,
)
from app.ingest import AgentTopicIngest
from app.metrics import Metrics
from app.operator_api import OperatorSurface
from app.policy import PolicyStore
from app.state_table import StateTable, tables_of
from app.topic_specs import ensure_topics, owned_topics
from app.transport import FETCH_MAX_WAIT_ATTR, SCHEME

__all__ = ["create_app"]

_log = logging.getLogger(__name__)

_BATCH = "trc.EventBatch"
_MAX_BATCH_BYTES = 256 * 1024
"""Well under the 1 MiB default record limit of producers and brokers."""


_PRODUCER_BUFFER_MESSAGES = 100_000
"""Faust stops the streams while its producer buffer holds more than this (default 100).
A write-behind flush stages one changelog record per changed key at once (hundreds with
50 live agents): at the default, every flush stalled detection for 30-130 ms."""

_ROCKSDB_COUNT_INTERVAL_S = 30.0
"""RocksDB tables count their keys by iterating: at most this often, not on every scrape."""

_CONTROL_OUTCOMES = {"control_ack": "ack", "command_rejected": "rejected"}
"""Agent events that belong in the control audit trail, and their audit entry."""


def _chunks(values: list[bytes], max_bytes: int) -> list[list[bytes]]:
    """Consecutive runs of ``values``, each at most ``max_bytes`` unless one value is larger."""
    chunks: list[list[bytes]] = []
    size = max_bytes + 1
    for value in values:
        if size + len(value) > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(value)
        size += len(value)
    return chunks


# Events the per-agent stream needs: liveness, spend and control outcomes (audit).
_AGENT_STREAM_TYPES = frozenset(
    {"heartbeat", "llm_call", "task_start", "task_end", "control_ack", "command_rejected"}
)


@functools.lru_cache(maxsize=100_000)
def _partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (as the producer would)."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


_NO_TOOL = ToolBaseline()
"""The (immutable) baseline events without a tool are folded with."""


class _Kill(NamedTuple):
    """A KILL sent and not yet confirmed, with the emission time of the event behind it."""

    sent: SentCommand
    emitted_at: int


def _broker_credentials(settings: Settings) -> Any:
    """TLS and SASL for Faust's own clients, from the same settings as every other client."""
    security = settings.kafka_security()
    context = security.get("ssl_context")
    if settings.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=security["sasl_plain_username"],
            password=security["sasl_plain_password"],
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings``; each app id is its own consumer group."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"{SCHEME}://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=_broker_credentials(settings),
        store=settings.table_store,
        datadir=str(settings.data_dir),
        web_host=settings.web_host,
        canonical_url=settings.canonical_url or f"http://{settings.web_host}:{settings.web_port}",
        web_port=settings.web_port,
        web_in_thread=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_session_timeout_s / 6,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=0,
        # Faust's default is 20 minutes. Measured on the embedded broker: now and then
        # a produce response never comes, and the whole pipeline waited for it. Failing
        # the send instead lets the ingest rewind and resend (duplicates are dropped by
        # event id).
        producer_request_timeout=settings.producer_request_timeout_s,
        stream_wait_empty=False,
    )
    setattr(app, FETCH_MAX_WAIT_ATTR, settings.fetch_max_wait_ms)
    app.producer.buffer.max_messages = _PRODUCER_BUFFER_MESSAGES
    metrics = Metrics()
    policies = PolicyStore(settings.policy_file)

    def internal_topic(name: str) -> Any:
        return app.topic(
            f"{settings.app_id}-{name}",
            key_serializer="raw",
            value_serializer="raw",
            internal=True,
            partitions=settings.partitions,
        )

    by_chain = internal_topic("events-by-chain")
    by_agent = internal_topic("events-by-agent")
    anomalies = app.topic(ANOMALIES, key_serializer="raw", value_serializer="raw")
    dead_letters = app.topic(DEAD_LETTER, key_serializer="raw", value_serializer="raw")
    prefix, partitions = settings.app_id, settings.partitions
    flush_s = settings.table_flush_interval_ms / 1000
    tasks = StateTable(app, f"{prefix}-tasks", TaskState, partitions, flush_s)
    chains = StateTable(app, f"{prefix}-chains", ChainState, partitions, flush_s)
    tools = StateTable(app, f"{prefix}-tools", ToolBaseline, partitions, flush_s)
    agents = StateTable(app, f"{prefix}-agents", AgentState, partitions, flush_s)
    operator = OperatorSurface(app, settings)  # fleet + trace tables, live stream, dashboard
    commands = CommandPublisher(settings, client_id=f"{settings.app_id}-control")
    state: dict[str, Any] = {
        "ingest": None,
        "assigned": False,
        "shards": None,
        "tables_counted": -_ROCKSDB_COUNT_INTERVAL_S,
    }

    async def forward(batch: list[tuple[dict[str, Any], bytes]]) -> list[Any]:
        # One record per partition per ingest batch: the stream pays its per-record
        # overhead once for many events (live agents send one or two events per chain
        # per batch), which keep their order inside. Each event goes to the partition
        # its key (chain, agent) would have picked, where its tables' partitions are.
        metrics.events_ingested.inc(len(batch))
        chain_events: dict[int, list[bytes]] = defaultdict(list)
        agent_events: dict[int, list[bytes]] = defaultdict(list)
        for event, value in batch:
            chain_events[_partition_of(event["correlation_id"], partitions)].append(value)
            if event["event_type"] in _AGENT_STREAM_TYPES:
                agent_events[_partition_of(event["agent_id"], partitions)].append(value)
        acks = []
        for topic, groups in ((by_chain, chain_events), (by_agent, agent_events)):
            for partition, values in groups.items():
                for chunk in _chunks(values, _MAX_BATCH_BYTES):
                    encoded = codec.encode(_BATCH, {"events": chunk})
                    acks.append(await topic.send(value=encoded, partition=partition))
        return acks

    async def dead_letter(record: ConsumerRecord, reason: str, kind: str) -> None:
        metrics.dead_letters.labels(reason=kind).inc()
        _log.warning(
            "dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason
        )
        await dead_letters.send(
            key=record.key,
            value=codec.encode(
                "trc.DeadLetter",
                {
                    "reason": reason,
                    "source_topic": record.topic,
                    "source_partition": record.partition,
                    "source_offset": record.offset,
                    "payload": record.value or b"",
                    "failed_at": now_us(),
                },
            ),
        )

    async def respond(outcome: Outcome, kills: list[_Kill]) -> None:
        """Send the KILL (into ``kills``, to confirm) and the anomaly record of ``outcome``."""
        finding, decision = outcome.finding, outcome.decision
        anomaly_id = uuid.uuid4().hex
        command_id = None
        if decision.kill:  # the kill goes first: it is what the agent is waiting for
            command = new_command(
                "KILL",
                decision.target_type,
                decision.target_id,
                decision.reason,
                issuer=f"{settings.app_id}/{finding.detector}",
                anomaly_id=anomaly_id,
            )
            kills.append(_Kill(await commands.send(command), finding.trigger_emitted_at))
            command_id = command["command_id"]
        latency_s = max(0.0, (now_us() - finding.trigger_emitted_at) / 1e6)
        if finding.level != "signal" and not decision.kill:
            metrics.detection_latency.observe(latency_s)
        metrics.anomalies.labels(
            detector=finding.detector, category=decision.category, level=finding.level
        ).inc()
        record = {
            "anomaly_id": anomaly_id,
            "detector": finding.detector,
            "category": decision.category,
            "severity": decision.severity,
            "agent_id": finding.agent_id,
            "task_id": finding.task_id,
            "correlation_id": finding.correlation_id,
            "detail": decision.reason,
            "evidence_event_ids": list(finding.evidence),
            "detected_at": now_us(),
            "detection_latency_ms": latency_s * 1000,
            "command_id": command_id,
            "level": finding.level,
            "value": finding.value,
            "threshold": finding.threshold,
            "root_cause_event_id": finding.root_cause_event_id,
        }
        await anomalies.send(
            key=finding.correlation_id.encode(), value=codec.encode("trc.Anomaly", record)
        )
        operator.on_anomaly(record)
        if finding.level == "breach":
            _log.warning(
                "%s %s on %s/%s: %s",
                decision.category,
                finding.detector,
                finding.agent_id,
                finding.task_id,
                decision.reason,
            )

    def decode(value: bytes) -> dict[str, Any]:
        return codec.decode(value, expect="trc.AgentEvent")[1]

    async def quarantine(value: bytes, topic: str, exc: Exception) -> None:
        # A bug or a surprise in one event must not stop the stream: keep it and go on.
        _log.exception("processing failed; dead-lettering the event")
        metrics.dead_letters.labels(reason="processing_error").inc()
        await dead_letters.send(
            value=codec.encode(
                "trc.DeadLetter",
                {
                    "reason": f"processing error: {type(exc).__name__}: {exc}",
                    "source_topic": topic,
                    "source_partition": -1,
                    "source_offset": -1,
                    "payload": value,
                    "failed_at": now_us(),
                },
            )
        )

    async def confirm(kill: _Kill) -> None:
        """Wait for the broker to acknowledge a KILL; raises if it refused."""
        await commands.confirm(kill.sent)
        metrics.commands_issued.labels(kind="KILL").inc()
        metrics.detection_latency.observe(max(0.0, (now_us() - kill.emitted_at) / 1e6))

    async def each_event(batch: bytes, topic: Any, handle: Any, *states: StateTable[Any]) -> None:
        """Run ``handle`` on every event of a batch; then the tables may write behind.

        The batch's KILLs are sent as they are decided and confirmed together at
        its end: a fleet-wide incident waits about two broker round trips (aiokafka
        has one request per broker in flight), not one per agent. The batch is done,
        and may be committed, only after that (a KILL the broker refused: its event
        dead-lettered).
        """
        try:
            values = codec.decode(batch, expect=_BATCH)[1]["events"]
        except Exception as exc:
            await quarantine(batch, topic.get_topic_name(), exc)
            return
        sent: list[tuple[_Kill, bytes]] = []  # each KILL with the event that called for it
        for value in values:
            kills: list[_Kill] = []
            try:
                await handle(decode(value), kills)
            except Exception as exc:
                await quarantine(value, topic.get_topic_name(), exc)
            sent += ((kill, value) for kill in kills)
        for kill, cause in sent:
            try:
                await confirm(kill)
            except Exception as exc:  # the event that called for it goes to dead letters
                command = kill.sent.command
                _log.error(
                    "KILL %s of %s %s was not acknowledged by the broker: %s",
                    command["command_id"],
                    command["target_type"],
                    command["target_id"],
                    exc,
                )
                await quarantine(cause, topic.get_topic_name(), exc)
        for table in states:
            table.commit()

    async def on_chain_event(event: dict[str, Any], kills: list[_Kill]) -> None:
        policy = policies.current().for_agent_type(event.get("agent_type"))
        tool_key = event.get("tool_name") or ""
        old_task = tasks.get(event["task_id"])
        old_chain = chains.get(event["correlation_id"])
        old_baseline = tools.get(tool_key) if tool_key else _NO_TOOL
        task, chain, baseline, outcomes = process_chain_event(
            old_task, old_chain, old_baseline, event, policy
        )
        if task is old_task:  # its event id was seen: resent after a send failed, or replayed
            metrics.events_duplicate.inc()
            return
        metrics.events_processed.inc()
        metrics.processing_delay.observe(max(0.0, (now_us() - event["emitted_at"]) / 1e6))
        operator.observe(event)  # the fleet's spend and the trace count each event once
        tasks.stage(event["task_id"], task)
        if chain is not old_chain:
            chains.stage(event["correlation_id"], chain)
        if tool_key and baseline is not old_baseline:
            tools.stage(tool_key, baseline)
        for outcome in outcomes:
            await respond(outcome, kills)

    async def on_agent_event(event: dict[str, Any], kills: list[_Kill]) -> None:
        if event["event_type"] in _CONTROL_OUTCOMES:
            await audit_control_outcome(event)
        policy = policies.current().for_agent_type(event.get("agent_type"))
        agent, outcomes = process_agent_event(agents.get(event["agent_id"]), event, policy)
        agents.stage(event["agent_id"], agent)
        for outcome in outcomes:
            await respond(outcome, kills)

    async def audit_control_outcome(event: dict[str, Any]) -> None:
        entry = _CONTROL_OUTCOMES[event["event_type"]]
        if entry == "rejected":
            metrics.command_rejections.labels(reason=event.get("status") or "unknown").inc()
        await commands.audit(
            audit_record(
                entry,
                command_id=event.get("command_id"),
                kind=event.get("action"),
                agent_id=event["agent_id"],
                task_id=event["task_id"],
                status=event.get("status"),
                latency_ms=event.get("control_latency_ms"),
            )
        )

    async def known_target(target_type: str, target_id: str) -> bool:
        if target_type == "agent":  # agent topics are global: the cluster knows
            ingest = state["ingest"]
            return ingest is not None and await ingest.topic_exists(events_topic(target_id))
        if operator.holds(target_type, target_id):
            return True
        # Tasks and chains live in the partition of their chain: ask the other workers.
        path = f"/api/targets/{target_type}/{quote(target_id, safe='')}"
        return any(answer.get("known") for answer in await operator.ask_peers(path))

    @app.agent(by_chain)
    async def detect_by_chain(stream: Any) -> None:
        async for batch in stream:
            await each_event(batch, by_chain, on_chain_event, tasks, chains, tools)
            operator.commit()

    @app.agent(by_agent)
    async def detect_by_agent(stream: Any) -> None:
        async for batch in stream:
            await each_event(batch, by_agent, on_agent_event, agents)

    alerted: dict[str, int] = {}
    """agent id -> last_seen it was reported silent for. Tables can only be written from
    stream iteration, so the timer remembers here; a restart may report a silence again."""

    async def check_silence() -> None:
        try:
            now, current = now_us(), policies.current()
            for agent_id, agent in agents.items():
                if alerted.get(agent_id) == agent.heartbeat.last_seen:
                    continue
                alerted.pop(agent_id, None)
                policy = current.for_agent_type(agent.heartbeat.agent_type)
                _, outcomes = check_agent(agent, now, policy)
                for outcome in outcomes:
                    alerted[agent_id] = agent.heartbeat.last_seen
                    kills: list[_Kill] = []
                    await respond(outcome, kills)
                    for kill in kills:
                        await confirm(kill)
        except Exception:  # a timer that raises stops the whole worker
            _log.exception("silence check failed; trying again in 1 s")

    async def run_ingest() -> None:
        await ensure_topics(settings, owned_topics(settings.partitions))
        await commands.start()
        ingest = AgentTopicIngest(
            settings,
            forward,
            dead_letter,
            metrics.agent_topics.set,
            metrics.ingest_lag.set,
            rekeyed_topics=(by_chain.get_topic_name(), by_agent.get_topic_name()),
        )
        if state["shards"] is not None:
            ingest.own(state["shards"])
        state["ingest"] = ingest
        try:
            await ingest.run()
        finally:
            await commands.stop()

    def owned_shards() -> frozenset[int]:
        topic = by_chain.get_topic_name()
        return frozenset(
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic
        )

    async def on_rebalanced(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = app.consumer.assignment()
        for states in (tasks, chains, tools, agents):
            states.forget(assigned)
        operator.forget(assigned)
        state["shards"] = owned_shards()
        if state["ingest"] is not None:
            state["ingest"].own(state["shards"])
        state["assigned"] = True

    def count_table_keys() -> None:
        interval = _ROCKSDB_COUNT_INTERVAL_S if settings.table_store == "rocksdb://" else 0.0
        if time.monotonic() - state["tables_counted"] < interval:
            return
        state["tables_counted"] = time.monotonic()
        for table in tables_of(app):
            name = table.name.removeprefix(f"{settings.app_id}-")
            metrics.table_keys.labels(table=name).set(len(table))

    app.task(run_ingest)
    app.timer(1.0)(check_silence)
    app.on_rebalance_complete.connect(on_rebalanced)

    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            metrics.policy_rejected_reloads.set(policies.rejected_reloads)
            count_table_keys()
            return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    class HealthView(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "time": time.time()})

    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            ingest = state["ingest"]
            ready = bool(ingest and ingest.running and state["assigned"] and not app.rebalancing)
            return self.json({"ready": ready}, status=200 if ready else 503)

    app.page("/metrics")(MetricsView)
    app.page("/healthz")(HealthView)
    app.page("/readyz")(ReadyView)
    operator.register(app)
    ControlApi(settings, commands, metrics, known_target, operator.holds).register(app)
    return app
