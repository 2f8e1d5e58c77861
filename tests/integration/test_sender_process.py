"""The sender process: events outlive the agent's process; a dead sender loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from agents_bridge import Monitor, load_settings
from agents_bridge.topics import events_topic
from tests.integration.conftest import unique
from tests.integration.topic_reader import read_until

pytestmark = pytest.mark.integration

_EVENTS = 2_000

_KILLED_AGENT = textwrap.dedent(
    """
    import os, signal, sys
    from agents_bridge import Monitor, load_settings
    monitor = Monitor(load_settings(bootstrap_servers=sys.argv[1], control_attach_timeout_s=0))
    monitor.start()
    run = monitor.run(sys.argv[2]).__enter__()
    for _ in range({events}):
        run.step("work")
    os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close: the process just dies
    """
)


def _step_indexes(seen: list[tuple[Any, dict[str, Any] | None]]) -> list[int]:
    steps = [v["step_index"] for _, v in seen if v and v["event_type"] == "step_start"]
    return list(dict.fromkeys(steps))


async def _steps_until(bootstrap: str, agent_id: str, last: int) -> list[int]:
    seen = await read_until(
        bootstrap,
        events_topic(agent_id),
        lambda seen: last in _step_indexes(seen),
        within_s=60,
        what=f"{agent_id}'s steps up to {last}",
    )
    return _step_indexes(seen)


def test_events_emitted_before_the_agent_process_is_killed_still_arrive(
    bootstrap_servers: str,
) -> None:
    agent_id = unique("killed-agent")
    agent = subprocess.run(
        [sys.executable, "-c", _KILLED_AGENT.format(events=_EVENTS), bootstrap_servers, agent_id],
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert agent.returncode == -signal.SIGKILL, agent.stderr
    steps = asyncio.run(_steps_until(bootstrap_servers, agent_id, _EVENTS))
    assert steps == list(range(1, _EVENTS + 1))


def test_a_killed_sender_process_hands_over_to_a_thread_and_loses_nothing(
    bootstrap_servers: str,
) -> None:
    settings = load_settings(bootstrap_servers=bootstrap_servers, control_attach_timeout_s=0)
    agent_id = unique("orphaned-agent")
    with Monitor(settings) as monitor, monitor.run(agent_id) as run:
        run.step("before")
        assert monitor.flush(30)
        stats = monitor.stats()
        assert stats["sender"] == "process" and stats["sender_pid"], stats
        os.kill(stats["sender_pid"], signal.SIGKILL)
        for _ in range(_EVENTS):
            run.step("after")
        assert monitor.flush(30), monitor.stats()
        assert monitor.stats()["sender"] == "thread"
    steps = asyncio.run(_steps_until(bootstrap_servers, agent_id, _EVENTS + 1))
    assert steps == list(range(1, _EVENTS + 2))


def test_an_idle_sender_wakes_for_the_next_event_without_a_flush(bootstrap_servers: str) -> None:
    settings = load_settings(bootstrap_servers=bootstrap_servers, control_attach_timeout_s=0)
    agent_id = unique("waking-agent")
    with Monitor(settings) as monitor:
        with monitor.run(unique("before-idle")) as run:
            run.step("work")
        assert monitor.flush(30)
        # The state under test: the sender stopped polling and waits for the doorbell.
        ring = monitor._emitter._ring
        assert ring is not None
        deadline = time.monotonic() + 10
        while not ring.reader_asleep:
            assert time.monotonic() < deadline, "the sender process never went idle"
            time.sleep(0.05)
        with monitor.run(agent_id) as run:
            run.step("work")
            # No flush, no stats(): only the doorbell wakes the sender.
            assert asyncio.run(_steps_until(bootstrap_servers, agent_id, 1)) == [1]


@pytest.mark.parametrize("why", ["chosen", "the sender process cannot start"])
def test_the_thread_sender_delivers_when_chosen_or_needed(
    why: str, bootstrap_servers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if why == "chosen":
        monkeypatch.setenv("TRC_SENDER", "thread")
    else:
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    settings = load_settings(bootstrap_servers=bootstrap_servers, control_attach_timeout_s=0)
    agent_id = unique("threaded-agent")
    with Monitor(settings) as monitor:
        with monitor.run(agent_id) as run:
            run.step("work")
        assert monitor.flush(30)
        assert monitor.stats()["sender"] == "thread"
    assert asyncio.run(_steps_until(bootstrap_servers, agent_id, 1)) == [1]
