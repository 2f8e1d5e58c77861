"""Fixtures for tests against the real broker: a detection worker and a monitor."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents_bridge import Monitor, load_settings
from app.broker import EmbeddedBroker
from app.worker_process import WorkerProcess
from tests.conftest import ARTIFACTS, free_port


def worker_env(bootstrap_servers: str, **extra: str) -> dict[str, str]:
    """Settings for a worker with its own app id (so its own consumer groups)."""
    app_id = f"test-{uuid.uuid4().hex[:8]}"
    return {
        "TRC_BOOTSTRAP_SERVERS": bootstrap_servers,
        "TRC_APP_ID": app_id,
        "TRC_WEB_PORT": str(free_port()),
        "TRC_DATA_DIR": str(ARTIFACTS / "data" / app_id),
        **extra,
    }


@pytest.fixture(scope="session")
def worker(bootstrap_servers: str) -> Iterator[WorkerProcess]:
    """One detection worker shared by the integration tests; agents use unique ids."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = worker_env(
        bootstrap_servers, TRC_POLICY_FILE=str(Path(__file__).with_name("policy.toml"))
    )
    with WorkerProcess(env, ARTIFACTS / f"worker-{env['TRC_APP_ID']}.log") as process:
        yield process


@pytest.fixture
def monitor(bootstrap_servers: str, worker: WorkerProcess) -> Iterator[Monitor]:
    """A started monitor; the worker is up, so trc.control exists."""
    with Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as started:
        yield started


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def quiet_broker() -> Iterator[str]:
    """An embedded broker of one test module: no other test's agents in its history, so
    a new worker group has nothing old to read and its counters count this module only."""
    log = ARTIFACTS / f"quiet-broker-{uuid.uuid4().hex[:6]}.log"
    with EmbeddedBroker(free_port(), log_path=log) as broker:
        yield broker.bootstrap_servers
