"""A broker outage loses nothing: events spill to the journal and are replayed in order.

Two outages: the broker frozen (SIGSTOP, as a hung broker or a partition looks
to a client) and the broker restarted. The embedded broker keeps data in
memory only, so a restart loses what it held; there the test asserts that
everything emitted from the moment of the stop onwards arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agents_bridge import Monitor, load_settings
from agents_bridge.topics import events_topic
from app.broker import EmbeddedBroker
from tests.conftest import ARTIFACTS, free_port
from tests.integration.topic_reader import read_until

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, to be stopped mid-test."""
    ARTIFACTS.mkdir(exist_ok=True)
    broker = EmbeddedBroker(free_port(), log_path=ARTIFACTS / "outage-broker.log")
    broker.start()
    yield broker
    if broker.pid:
        os.kill(broker.pid, signal.SIGCONT)  # in case the test failed while it was frozen
    broker.stop()


class _Fleet:
    """Agents each emitting a step every few milliseconds, on their own threads."""

    def __init__(self, monitor: Monitor, count: int) -> None:
        self.agent_ids = [f"outage-{i}-{time.monotonic_ns()}" for i in range(count)]
        self.emitted = dict.fromkeys(self.agent_ids, 0)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._agent, args=(monitor, a)) for a in self.agent_ids
        ]

    def _agent(self, monitor: Monitor, agent_id: str) -> None:
        with monitor.run(agent_id) as run:
            while not self._stop.wait(0.005):
                run.step("work")
                self.emitted[agent_id] = run.step_index

    def __enter__(self) -> _Fleet:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def _steps(seen: list[tuple[Any, dict[str, Any] | None]]) -> list[int]:
    return [v["step_index"] for _, v in seen if v and v["event_type"] == "step_start"]


def _monitor(broker: EmbeddedBroker) -> Monitor:
    settings = load_settings(
        bootstrap_servers=broker.bootstrap_servers, send_timeout_s=1.0, control_attach_timeout_s=0
    )
    return Monitor(settings).start()


def _until(condition: Callable[[], bool], what: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {within_s:.0f} s for {what}"
        time.sleep(0.02)


def _more_steps(fleet: _Fleet, steps: int) -> Callable[[], bool]:
    """True once every agent of ``fleet`` emitted ``steps`` more steps than now."""
    now = dict(fleet.emitted)
    return lambda: all(fleet.emitted[a] >= now[a] + steps for a in now)


def _wait_replayed(monitor: Monitor) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (stats := monitor.stats())["spilling"] or stats["pending"]:
        assert time.monotonic() < deadline, f"the journal was not replayed: {stats}"
        time.sleep(0.05)
    return stats


async def _all_steps(broker: EmbeddedBroker, agent_id: str, last: int) -> list[int]:
    seen = await read_until(
        broker.bootstrap_servers,
        events_topic(agent_id),
        lambda seen: bool(_steps(seen)) and max(_steps(seen)) >= last,
        what=f"{agent_id}'s events up to step {last}",
    )
    return list(dict.fromkeys(_steps(seen)))  # deduplicated, first arrival order


def test_a_frozen_broker_loses_nothing(own_broker: EmbeddedBroker) -> None:
    monitor = _monitor(own_broker)
    try:
        with _Fleet(monitor, 3) as fleet:
            _until(lambda: monitor.stats()["sent"] > 0, "the first events to be sent")
            before = monitor.stats()["spilled"]  # a slow first topic creation may spill too
            assert own_broker.pid is not None
            os.kill(own_broker.pid, signal.SIGSTOP)
            try:  # sends time out after 1 s: the agents spill and carry on
                _until(lambda: monitor.stats()["spilled"] > before, "a spill while frozen")
                _until(_more_steps(fleet, 20), "the agents to carry on while spilling")
            finally:
                os.kill(own_broker.pid, signal.SIGCONT)
            _until(_more_steps(fleet, 20), "more steps after the broker thawed")
        stats = _wait_replayed(monitor)
    finally:
        monitor.close()
    assert stats["spilled"] > before and stats["replayed"] == stats["spilled"], stats
    assert stats["idempotent"] is False, "Tansu refuses InitProducerId: the fallback is used"
    for agent_id, last in fleet.emitted.items():
        steps = asyncio.run(_all_steps(own_broker, agent_id, last))
        assert steps == list(range(1, last + 1)), f"{agent_id}: {_gaps(steps, 1, last)}"


def test_a_restarted_broker_gets_everything_emitted_since_it_stopped(
    own_broker: EmbeddedBroker,
) -> None:
    monitor = _monitor(own_broker)
    try:
        with _Fleet(monitor, 3) as fleet:
            _until(lambda: monitor.stats()["sent"] > 0, "the first events to be sent")
            before = monitor.stats()["spilled"]  # a slow first topic creation may spill too
            own_broker.stop()  # memory-only: what it held is gone
            at_stop = dict(fleet.emitted)
            _until(lambda: monitor.stats()["spilled"] > before, "a spill while stopped")
            _until(_more_steps(fleet, 20), "the agents to carry on while spilling")
            own_broker.start()
            _until(_more_steps(fleet, 20), "more steps after the broker restarted")
        stats = _wait_replayed(monitor)
    finally:
        monitor.close()
    assert stats["spilled"] > before and stats["dropped_queue_full"] == 0, stats
    for agent_id, last in fleet.emitted.items():
        steps = asyncio.run(_all_steps(own_broker, agent_id, last))
        first = at_stop[agent_id] + 1
        since_stop = [s for s in steps if s >= first]
        assert since_stop == list(range(first, last + 1)), (
            f"{agent_id}: {_gaps(since_stop, first, last)}"
        )


def _gaps(steps: list[int], first: int, last: int) -> str:
    missing = sorted(set(range(first, last + 1)) - set(steps))
    disorder = [b for a, b in itertools.pairwise(steps) if b < a]
    return f"missing {missing[:10]} (of {len(missing)}), out of order {disorder[:10]}"


def test_an_agent_started_without_a_broker_delivers_on_its_next_start(
    own_broker: EmbeddedBroker, tmp_path: Any
) -> None:
    agent_id = f"offline-{time.monotonic_ns()}"
    journal = tmp_path / "agent-journal"
    offline = load_settings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        journal_dir=journal,
        send_timeout_s=0.5,
        control_attach_timeout_s=0,
    )
    with Monitor(offline) as monitor:  # nothing listens there: it must not fail the agent
        with monitor.run(agent_id) as run:
            for _ in range(20):
                run.step("work offline")
        assert monitor.flush(5)
        assert monitor.stats()["spilling"]
    # The process restarts (same journal directory), and this time the broker is there.
    online = load_settings(
        bootstrap_servers=own_broker.bootstrap_servers,
        journal_dir=journal,
        control_attach_timeout_s=0,
    )
    with Monitor(online) as monitor:
        stats = _wait_replayed(monitor)
    assert stats["replayed"] >= 22, stats  # task_start, 20 steps, task_end
    steps = asyncio.run(_all_steps(own_broker, agent_id, 20))
    assert steps == list(range(1, 21))
