"""End to end on the real broker: emit -> detect -> kill -> ack."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from agents_bridge import AgentKilled, Monitor
from agents_bridge.topics import ANOMALIES, CONTROL, events_topic
from app.worker_process import WorkerProcess
from tests.integration.conftest import unique
from tests.integration.topic_reader import read_until

pytestmark = pytest.mark.integration

_KILLS_ISSUED = 'trc_commands_issued_total{kind="KILL"}'

# Equivalent arguments written three ways: key order and whitespace differ.
EQUIVALENT_ARGS: list[Any] = [
    {"query": "refund policy", "limit": 5},
    '{ "limit": 5,   "query": "refund policy" }',
    {"limit": 5, "query": "refund policy"},
]


async def test_looping_async_agent_is_killed_and_the_healthy_one_finishes(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    looper_id, healthy_id = unique("looper"), unique("healthy")
    calls: list[int] = []
    looper_task_id: list[str] = []

    async def looping_agent() -> None:
        async with monitor.run(looper_id) as run:
            looper_task_id.append(run.task_id)
            for args in EQUIVALENT_ARGS * 3:
                run.step("search")
                run.tool_call("kb_search", args)
                calls.append(1)
                if len(calls) == 3:
                    await asyncio.Event().wait()  # a model call that never returns

    healthy_done = threading.Event()

    def healthy_agent() -> None:
        with monitor.run(healthy_id) as run:
            for city in ["Oslo", "Lima", "Pune", "Kyiv"]:
                run.step("weather")
                run.tool_call("weather", {"city": city})
        healthy_done.set()

    with pytest.raises(AgentKilled) as killed:
        await asyncio.wait_for(looping_agent(), timeout=30)
    assert len(calls) == 3, "the kill must land before the 4th equivalent call"
    command = killed.value.command
    assert command["kind"] == "KILL"
    assert command["target_type"] == "task" and command["target_id"] == looper_task_id[0]

    # Killing one agent leaves the others in the same process running.
    thread = threading.Thread(target=healthy_agent)
    thread.start()
    await asyncio.to_thread(thread.join, 30)
    assert healthy_done.is_set(), "the healthy agent did not finish"
    assert monitor.flush(10)

    anomalies = await read_until(
        bootstrap_servers,
        ANOMALIES,
        lambda seen: any(v and v["agent_id"] == looper_id for _, v in seen),
        what=f"an anomaly for {looper_id}",
    )
    anomaly = next(v for _, v in anomalies if v and v["agent_id"] == looper_id)
    assert anomaly["detector"] == "reasoning_loop"
    assert anomaly["category"] == "runaway"
    assert len(anomaly["evidence_event_ids"]) == 3
    assert anomaly["command_id"] == command["command_id"]
    assert not any(v and v["agent_id"] == healthy_id for _, v in anomalies)

    controls = await read_until(
        bootstrap_servers,
        CONTROL,
        lambda seen: any(v and v["command_id"] == command["command_id"] for _, v in seen),
        what="the KILL command",
    )
    record = next(r for r, v in controls if v and v["command_id"] == command["command_id"])
    assert record.key == f"task:{looper_task_id[0]}".encode()

    events = await read_until(
        bootstrap_servers,
        events_topic(looper_id),
        lambda seen: any(v and v["event_type"] == "task_end" for _, v in seen),
        what="the looper's task_end",
    )
    types = [v["event_type"] for _, v in events if v]
    assert types.count("tool_call") == 3
    ack = next(v for _, v in events if v and v["event_type"] == "control_ack")
    assert ack["command_id"] == command["command_id"]
    assert ack["control_latency_ms"] is not None and ack["control_latency_ms"] > 0
    end = next(v for _, v in events if v and v["event_type"] == "task_end")
    assert end["status"] == "killed"


async def test_sync_agent_stops_at_its_next_step_boundary(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent_id = unique("sync-looper")
    outcome: dict[str, Any] = {}

    def sync_agent() -> None:
        try:
            with monitor.run(agent_id) as run:
                for args in EQUIVALENT_ARGS:
                    run.tool_call("lookup", args)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # keeps reasoning, one step at a time
                    run.step("think")
                    time.sleep(0.01)  # the agent's own work between steps
                outcome["result"] = "never killed"
        except AgentKilled as exc:
            outcome["result"] = exc

    thread = threading.Thread(target=sync_agent)
    thread.start()
    await asyncio.to_thread(thread.join, 40)
    assert isinstance(outcome.get("result"), AgentKilled), outcome
    assert monitor.flush(10)
    events = await read_until(
        bootstrap_servers,
        events_topic(agent_id),
        lambda seen: any(v and v["event_type"] == "control_ack" for _, v in seen),
        what="the control_ack",
    )
    assert [v["event_type"] for _, v in events if v].count("tool_call") == 3


async def test_agents_looping_at_once_are_each_killed_once_before_their_4th_call(
    monitor: Monitor, worker: WorkerProcess, bootstrap_servers: str
) -> None:
    # Their KILLs are decided in the same batches and confirmed together.
    agents = [unique("burst") for _ in range(6)]
    calls = dict.fromkeys(agents, 0)
    kills_before = worker.metric(_KILLS_ISSUED)

    async def looping_agent(agent_id: str) -> None:
        async with monitor.run(agent_id) as run:
            for args in EQUIVALENT_ARGS * 3:
                run.tool_call("kb_search", args)
                calls[agent_id] += 1
                if calls[agent_id] == 3:
                    await asyncio.wait_for(asyncio.Event().wait(), 30)

    outcomes = await asyncio.gather(*map(looping_agent, agents), return_exceptions=True)
    assert all(isinstance(o, AgentKilled) for o in outcomes), outcomes
    assert set(calls.values()) == {3}, calls
    commands = {
        a: o.command for a, o in zip(agents, outcomes, strict=True) if isinstance(o, AgentKilled)
    }
    assert len({c["command_id"] for c in commands.values()}) == len(agents)

    anomalies = await read_until(
        bootstrap_servers,
        ANOMALIES,
        lambda seen: {v["agent_id"] for _, v in seen if v} >= set(agents),
        what="an anomaly for each looping agent",
    )
    for agent_id, command in commands.items():
        mine = [v for _, v in anomalies if v and v["agent_id"] == agent_id]
        assert [v["command_id"] for v in mine] == [command["command_id"]], mine
    assert worker.metric(_KILLS_ISSUED) - kills_before == len(agents)
