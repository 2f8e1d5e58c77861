"""The operator surface on a real broker and worker: trace store, fleet, live stream, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents_bridge import Monitor
from agents_bridge.codec import codec
from agents_bridge.journal import Journal
from agents_bridge.topics import events_topic
from app.worker_process import WorkerProcess
from tests.conftest import free_port
from tests.integration.conftest import unique
from tests.integration.topic_reader import read_until
from tests.integration.worker_api import get

pytestmark = pytest.mark.integration


async def wait_for(
    worker: WorkerProcess, path: str, done: Any, what: str, within_s: float = 15.0
) -> Any:
    """GET ``path`` until ``done(body)``; fails with the last answer after ``within_s``."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        status, last = await asyncio.to_thread(get, worker, path)
        if status == 200 and done(last):
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"{what} not served by {path} within {within_s} s; last answer: {last}")


def trc(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def run_failing_chain(monitor: Monitor, planner: str, executor: str) -> str:
    """planner -> executor; the executor's tool call fails, it reports the error and gives up."""
    with monitor.run(planner, agent_type="planner") as plan:
        plan.step("plan the work")
        plan.llm_call(model="gpt-4o", prompt_tokens=400, completion_tokens=100)
        try:
            with monitor.run(executor, agent_type="executor") as execute:
                execute.step("fetch the page")
                execute.tool_call("http_get", {"url": "https://example.test"}, status="error")
                execute.error("upstream answered 503", tool_name="http_get")
                raise RuntimeError("no page")  # the executor gives up: its task ends in error
        except RuntimeError:
            pass  # the planner carries on without it
        plan.step("summarise")
    assert monitor.flush(10)
    return plan.correlation_id


async def test_trace_fleet_and_tasks_of_a_failing_chain(
    monitor: Monitor, worker: WorkerProcess
) -> None:
    planner, executor = unique("planner"), unique("executor")
    chain = await asyncio.to_thread(run_failing_chain, monitor, planner, executor)

    # planner: task_start, step, llm_call, subagent_spawn, step, task_end; executor: 5
    trace = await wait_for(
        worker, f"/api/trace/{chain}", lambda t: t["events"] >= 11, "the whole chain"
    )
    assert trace["events"] == 11 and trace["tasks"] == 2
    [root] = trace["roots"]
    assert root["agent_id"] == planner and root["status"] == "ok"
    [child] = root["children"]
    assert child["agent_id"] == executor and child["parent_task_id"] == root["task_id"]
    cause = trace["root_cause"]
    assert cause["agent_id"] == executor and cause["step"] == 1
    failing = next(s for s in child["steps"] if s["step"] == 1)
    assert failing["root_cause"] and failing["tools"] == ["http_get"]
    assert root["tokens"] == 500

    fleet = await wait_for(
        worker,
        "/api/fleet",
        lambda f: {r["agent_id"] for r in f["agents"]} >= {planner, executor},
        "both agents",
    )
    rows = {r["agent_id"]: r for r in fleet["agents"]}
    assert rows[planner]["state"] == "finished" and rows[planner]["tokens"] == 500
    assert rows[executor]["state"] == "finished" and rows[executor]["errors"] == 3

    status, tasks = get(worker, f"/api/tasks?chain={chain}")
    assert status == 200
    assert {t["agent_id"]: t["status"] for t in tasks["tasks"]} == {
        planner: "ok",
        executor: "error",
    }
    status, missing = get(worker, "/api/trace/no-such-chain")
    assert status == 404 and "no-such-chain" in missing["error"]

    server = worker.url("")
    shown = await asyncio.to_thread(trc, "trace", chain, "--server", server)
    assert shown.returncode == 0, shown.stderr
    assert f"ROOT CAUSE: {executor}" in shown.stdout
    assert "http_get()" in shown.stdout and "<- ROOT CAUSE" in shown.stdout
    as_json = await asyncio.to_thread(trc, "trace", chain, "--server", server, "-o", "json")
    assert json.loads(as_json.stdout)["root_cause"] == cause
    agents = await asyncio.to_thread(trc, "agents", "--server", server, "-o", "json")
    assert agents.returncode == 0
    assert {planner, executor} <= {r["agent_id"] for r in json.loads(agents.stdout)}
    tasks_table = await asyncio.to_thread(trc, "tasks", "--server", server, "--chain", chain)
    assert tasks_table.returncode == 0 and executor in tasks_table.stdout
    assert tasks_table.stdout.startswith("TASK")
    status_out = await asyncio.to_thread(trc, "status", "--server", server)
    assert status_out.returncode == 0 and "events observed" in status_out.stdout

    not_found = await asyncio.to_thread(trc, "trace", "no-such-chain", "--server", server)
    assert not_found.returncode == 1 and "no-such-chain" in not_found.stderr
    nobody = f"http://127.0.0.1:{free_port()}"
    unreachable = await asyncio.to_thread(trc, "agents", "--server", nobody)
    assert unreachable.returncode == 3 and "does not answer" in unreachable.stderr
    usage = await asyncio.to_thread(trc, "trace")
    assert usage.returncode == 2


async def test_the_live_stream_shows_an_event_and_the_agent_within_a_second(
    monitor: Monitor, worker: WorkerProcess
) -> None:
    agent = unique("streamed")
    async with (
        aiohttp.ClientSession() as session,
        session.get(worker.url(f"/api/stream?agent={agent}")) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        kinds: list[str] = []

        async def next_message() -> tuple[str, Any]:
            kind, data = "", ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and kind:
                    return kind, json.loads(data)
            raise AssertionError("the stream ended")

        assert (await asyncio.wait_for(next_message(), 5))[0] == "hello"
        with monitor.run(agent) as run:
            emitted = time.monotonic()
            run.step("look around")
            seen: dict[str, float] = {}
            agent_row: dict[str, Any] = {}
            while "event" not in seen or "agent" not in seen:
                kind, data = await asyncio.wait_for(next_message(), 10)
                kinds.append(kind)
                if kind == "event" and data["type"] == "step_start":
                    seen.setdefault("event", time.monotonic() - emitted)
                if kind == "agent" and data["current_step"] == "look around":
                    seen.setdefault("agent", time.monotonic() - emitted)
                    agent_row = data
        assert agent_row["state"] == "running" and agent_row["agent_id"] == agent
        assert seen["event"] < 1.0 and seen["agent"] < 1.0, seen


async def test_trc_tail_filters_live_events_by_agent(
    monitor: Monitor, bootstrap_servers: str
) -> None:
    agent, other = unique("tailed"), unique("other")
    tail = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "tail",
        "--bootstrap-servers",
        bootstrap_servers,
        "--agent",
        agent,
        "--type",
        "tool_call",
        "-o",
        "json",
        "--max",
        "2",
        "--timeout",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert tail.stderr is not None
        ready = (await asyncio.wait_for(tail.stderr.readline(), 20)).decode()
        assert ready.startswith("tailing"), ready
        with monitor.run(other) as run:
            run.tool_call("lookup", {"q": "not this one"})
        with monitor.run(agent) as run:
            run.step("first")
            run.tool_call("lookup", {"q": 1})
            run.tool_call("lookup", {"q": 2})
        assert monitor.flush(10)
        out, err = await asyncio.wait_for(tail.communicate(), 40)
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()
    assert tail.returncode == 0, err.decode()
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert [(r["kind"], r["agent_id"], r["event_type"]) for r in records] == [
        ("event", agent, "tool_call"),
        ("event", agent, "tool_call"),
    ]


async def test_trc_export_writes_an_agents_events_as_json_lines(
    monitor: Monitor, bootstrap_servers: str, tmp_path: Path
) -> None:
    agent = unique("exported")
    with monitor.run(agent) as run:
        run.step("only step")
        run.tool_call("lookup", {"q": "x"})
    assert monitor.flush(10)
    out = tmp_path / "export.jsonl"
    done = await asyncio.to_thread(
        trc, "export", "--bootstrap-servers", bootstrap_servers, "--agent", agent, "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e["agent_id"] for e in events} == {agent}
    types = [e["event_type"] for e in events]
    assert types[:4] == ["task_start", "step_start", "tool_call", "task_end"]
    assert "events exported" in done.stderr and "reading trc.events.*" in done.stderr
    nothing = await asyncio.to_thread(
        trc, "export", "--bootstrap-servers", bootstrap_servers, "--agent", unique("nobody")
    )
    assert nothing.returncode == 1


async def test_trc_journal_replay_sends_a_spilled_backlog_with_acknowledgement(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    agent = unique("journaled")
    journal = Journal(tmp_path / "journal", 1 << 20)
    ids = [uuid.uuid4().hex for _ in range(5)]
    journal.append(
        [
            (
                events_topic(agent),
                agent.encode(),
                codec.encode(
                    "trc.AgentEvent",
                    {
                        "event_id": event_id,
                        "event_type": "step_start",
                        "agent_id": agent,
                        "task_id": "t",
                        "correlation_id": "c",
                        "step_index": i,
                        "emitted_at": time.time_ns() // 1000,
                    },
                ),
            )
            for i, event_id in enumerate(ids)
        ]
    )
    args = ["journal", "replay", "--dir", str(tmp_path / "journal"), "--bootstrap-servers"]
    down = await asyncio.to_thread(trc, *args, f"127.0.0.1:{free_port()}")
    assert down.returncode == 3 and "left as it was" in down.stderr
    assert journal.pending(), "a failed replay must keep the backlog"

    done = await asyncio.to_thread(trc, *args, bootstrap_servers)
    assert done.returncode == 0, done.stderr
    assert "5 events replayed" in done.stderr and "replaying" in done.stderr  # the progress bar
    assert not journal.pending()
    records = await read_until(
        bootstrap_servers,
        events_topic(agent),
        lambda seen: len(seen) >= 5,
        what="the replayed events",
    )
    assert [v["event_id"] for _, v in records if v] == ids, "in order, each once"

    again = await asyncio.to_thread(trc, *args, bootstrap_servers)
    assert again.returncode == 1 and "nothing to replay" in again.stderr
