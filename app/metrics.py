"""Prometheus metrics of the cluster app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agents_bridge.command_gate import KINDS

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One registry per app instance, so tests can run several in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_processed = Counter(
            "trc_events_processed",
            "Agent events processed by the detectors.",
            registry=self.registry,
        )
        self.events_duplicate = Counter(
            "trc_events_duplicate",
            "Agent events whose event id the detectors had seen (resent after a failed send, "
            "or replayed after a restart): not processed again.",
            registry=self.registry,
        )
        self.events_ingested = Counter(
            "trc_events_ingested",
            "Agent events read from the agent topics and forwarded to the detectors; "
            "ahead of trc_events_processed_total by what is in flight and by duplicates.",
            registry=self.registry,
        )
        self.anomalies = Counter(
            "trc_anomalies",
            "Findings published on trc.anomalies.",
            ["detector", "category", "level"],
            registry=self.registry,
        )
        self.commands_issued = Counter(
            "trc_commands_issued", "Control commands issued.", ["kind"], registry=self.registry
        )
        for kind in KINDS:  # from 0, so increase() sees a worker's first kill
            self.commands_issued.labels(kind=kind)
        self.command_rejections = Counter(
            "trc_command_rejections",
            "Commands refused: by the command API (unauthorized, bad_request, unknown_target, "
            "broker_unavailable) or by agents (unsigned, unknown_key, forged, expired, replayed).",
            ["reason"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "trc_dead_letters",
            "Records sent to the dead-letter topic.",
            ["reason"],
            registry=self.registry,
        )
        self.detection_latency = Histogram(
            "trc_detection_latency_seconds",
            "Offending event emitted -> control command acknowledged by the broker.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.processing_delay = Histogram(
            "trc_processing_delay_seconds",
            "Agent event emitted -> folded into the detectors' state, every event: how far "
            "detection runs behind the agents.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ingest_lag = Gauge(
            "trc_ingest_lag_records",
            "Records on this worker's agent topics not read yet (high watermark - position).",
            registry=self.registry,
        )
        self.table_keys = Gauge(
            "trc_table_keys",
            "Keys this worker holds per state table (with RocksDB counted at most every 30 s).",
            ["table"],
            registry=self.registry,
        )
        self.policy_rejected_reloads = Gauge(
            "trc_policy_rejected_reloads",
            "Policy file edits rejected as invalid.",
            registry=self.registry,
        )
        self.agent_topics = Gauge(
            "trc_agent_topics", "Agent event topics being consumed.", registry=self.registry
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
