"""The ``trc`` commands a new user runs first: ``trc broker`` and ``trc demo``."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.broker import wait_for_broker
from tests.conftest import ARTIFACTS, free_port

pytestmark = pytest.mark.integration


def _trc(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def test_trc_broker_answers_metadata_and_stops_on_sigterm() -> None:
    port = free_port()
    process = _trc("broker", "--port", str(port))
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()  # blocks until ready or exit
        assert f"ready on 127.0.0.1:{port}" in first_line, first_line
        asyncio.run(wait_for_broker(f"127.0.0.1:{port}", wait_s=5))
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(Exception, match="no Kafka broker answered"):
        asyncio.run(wait_for_broker(f"127.0.0.1:{port}", wait_s=1))


def test_trc_broker_refuses_a_busy_port() -> None:
    port = free_port()
    first = _trc("broker", "--port", str(port))
    try:
        assert first.stdout is not None
        assert "ready" in first.stdout.readline()
        second = _trc("broker", "--port", str(port))
        output, _ = second.communicate(timeout=20)
        assert second.returncode == 1
        assert f"port {port}" in output and "already in use" in output
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(15)


def test_trc_demo_kills_the_looping_agent_and_exits_zero() -> None:
    process = _trc("demo", "--port", str(free_port()), "--web-port", str(free_port()))
    output, _ = process.communicate(timeout=120)
    Path(ARTIFACTS).mkdir(exist_ok=True)
    (ARTIFACTS / "demo-output.txt").write_text(output)
    assert process.returncode == 0, output
    assert "KILLED after 3 calls" in output
    assert "ANOMALY reasoning_loop [runaway]" in output
    assert output.count("finished its task") == 3
    assert "ANOMALY token_growth [recoverable]" in output
