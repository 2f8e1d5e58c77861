"""Shared fixtures: a real Kafka-protocol broker for the whole session.

Broker choice, in order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; a testcontainers
Kafka if a Docker engine answers; else the embedded Tansu broker on a free
loopback port, started once and stopped (by PID) at the end.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _docker_answers() -> bool:
    try:
        import docker  # installed with testcontainers

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from app.broker import EmbeddedBroker

    ARTIFACTS.mkdir(exist_ok=True)
    with EmbeddedBroker(free_port(), log_path=ARTIFACTS / "embedded-broker.log") as broker:
        yield broker.bootstrap_servers


@pytest.fixture(autouse=True)
def _own_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's monitors (and the agent processes it starts) spill to their own journal."""
    monkeypatch.setenv("TRC_JOURNAL_DIR", str(tmp_path / "journal"))
