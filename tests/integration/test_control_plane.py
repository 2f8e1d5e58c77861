"""The control plane on the real broker: operator commands, standing commands,
pause and resume, rollback, signatures, the command API and its CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agents_bridge import AgentKilled, Monitor, load_settings
from agents_bridge.actions import ActionRegistry
from agents_bridge.clock import now_us
from agents_bridge.codec import codec
from agents_bridge.settings import DEV_SIGNING_KEYS
from agents_bridge.signing import CommandSigner
from agents_bridge.topics import CHECKPOINTS, CONTROL, ESCALATIONS, events_topic
from app.commands import command_key, new_command
from app.worker_process import WorkerProcess
from tests.integration.conftest import unique
from tests.integration.topic_reader import read_until, until
from tests.integration.worker_api import call, issue

pytestmark = pytest.mark.integration

Events = list[dict[str, Any]]
LONG_RUNNER = "long-runner"
"""Steps until a command stops it: the test worker's policy (policy.toml) lets it."""


async def _events(
    bootstrap: str, agent_id: str, until_seen: Any, what: str, within_s: float = 20
) -> Events:
    seen = await read_until(
        bootstrap,
        events_topic(agent_id),
        lambda pairs: until_seen([v for _, v in pairs if v]),
        what=what,
        within_s=within_s,
    )
    return [v for _, v in seen if v]


def _acks(events: Events, status: str) -> Events:
    return [e for e in events if e["event_type"] == "control_ack" and e["status"] == status]


class _Worker(threading.Thread):
    """A sync agent that steps until told to stop or halted by a command."""

    def __init__(self, monitor: Monitor, agent_id: str, **run: Any) -> None:
        super().__init__(daemon=True)
        self.monitor, self.agent_id, self.run_options = monitor, agent_id, run
        self.steps = 0
        self.started = threading.Event()
        self.stop = threading.Event()
        self.outcome: BaseException | str | None = None
        self.task_id = ""
        self.correlation_id = ""
        self.carrier: dict[str, str] = {}

    def run(self) -> None:
        try:
            with self.monitor.run(self.agent_id, agent_type=LONG_RUNNER, **self.run_options) as run:
                self.task_id, self.correlation_id = run.task_id, run.correlation_id
                self.carrier = run.carrier()
                while not self.stop.is_set() and self.steps < 2000:
                    run.step("work")
                    self.steps += 1
                    self.started.set()
                    time.sleep(0.02)  # the agent's own work between steps
            self.outcome = "finished"
        except AgentKilled as exc:
            self.outcome = exc


@pytest.fixture
def workers() -> Iterator[list[_Worker]]:
    started: list[_Worker] = []
    yield started
    for agent in started:
        agent.stop.set()
        agent.join(10)


async def _start(workers: list[_Worker], agent: _Worker) -> _Worker:
    workers.append(agent)
    agent.start()
    assert await asyncio.to_thread(agent.started.wait, 20), f"{agent.agent_id} did not start"
    return agent


async def test_killing_one_agent_leaves_the_others_running_and_checkpoints_it(
    monitor: Monitor, worker: WorkerProcess, bootstrap_servers: str, workers: list[_Worker]
) -> None:
    target = await _start(workers, _Worker(monitor, unique("kill-me")))
    bystander = await _start(workers, _Worker(monitor, unique("bystander")))

    issued = await issue(worker, "KILL", "agent", target.agent_id, reason="runaway spend")
    await asyncio.to_thread(target.join, 20)
    assert isinstance(target.outcome, AgentKilled), target.outcome
    assert target.outcome.command["command_id"] == issued["command_id"]

    steps_at_kill = bystander.steps
    await until(lambda: bystander.steps >= steps_at_kill + 5, within_s=20, what="bystander steps")
    assert bystander.is_alive() and bystander.outcome is None
    bystander.stop.set()
    await asyncio.to_thread(bystander.join, 20)
    assert bystander.outcome == "finished"

    assert monitor.flush(10)
    events = await _events(
        bootstrap_servers, target.agent_id, lambda es: _acks(es, "killed"), "the kill ack"
    )
    ack = _acks(events, "killed")[0]
    assert ack["action"] == "KILL" and ack["command_id"] == issued["command_id"]
    assert 0 < ack["control_latency_ms"] < 10_000
    checkpoints = await read_until(
        bootstrap_servers,
        CHECKPOINTS,
        lambda seen: any(v and v["task_id"] == target.task_id for _, v in seen),
        what="the killed task's checkpoint",
    )
    checkpoint = next(v for _, v in checkpoints if v and v["task_id"] == target.task_id)
    assert checkpoint["command_id"] == issued["command_id"]
    assert checkpoint["last_step_index"] == target.steps and checkpoint["last_action"] == "work"


async def test_a_chain_command_stops_exactly_that_chain_in_every_process(
    monitor: Monitor, worker: WorkerProcess, bootstrap_servers: str, workers: list[_Worker]
) -> None:
    parent = await _start(workers, _Worker(monitor, unique("chain-parent")))
    other = await _start(workers, _Worker(monitor, unique("other-chain")))
    child_id = unique("chain-child")
    child = subprocess.Popen(  # noqa: ASYNC220 - started once; reads go through threads
        [
            sys.executable,
            "-m",
            "tests.integration.controlled_agent",
            bootstrap_servers,
            child_id,
            json.dumps(parent.carrier),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        assert line.startswith("started "), f"child process: {line!r}"

        issued = await issue(worker, "KILL", "chain", parent.correlation_id)
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line.strip() == f"halted {issued['command_id']}", line
        await asyncio.to_thread(parent.join, 20)
        assert isinstance(parent.outcome, AgentKilled)
        assert other.is_alive() and other.outcome is None, "another chain was stopped"
        assert await asyncio.to_thread(child.wait, 30) == 0
    finally:
        child.kill()
        child.wait()


async def test_a_restarted_executor_honours_a_standing_kill_until_resumed_or_cleared(
    bootstrap_servers: str, worker: WorkerProcess
) -> None:
    settings = load_settings(bootstrap_servers=bootstrap_servers)
    agent_id, cleared_id = unique("standing"), unique("cleared")
    with Monitor(settings) as first:
        for name in (agent_id, cleared_id):
            with first.run(name) as run:
                run.step("introduce myself")
        assert first.flush(10)
    kill = await issue(worker, "KILL", "agent", agent_id, reason="stay down")
    await issue(worker, "KILL", "agent", cleared_id)
    status, _ = await asyncio.to_thread(call, worker, "DELETE", f"/api/commands/agent/{cleared_id}")
    assert status == 200

    await read_until(
        bootstrap_servers,
        CONTROL,
        lambda seen: any(r.key == f"agent:{cleared_id}".encode() and not r.value for r, _ in seen),
        what="the tombstone",
    )
    with Monitor(settings) as restarted:
        with pytest.raises(AgentKilled) as killed, restarted.run(agent_id) as run:
            run.step("try again")
        assert killed.value.command["command_id"] == kill["command_id"]
        with restarted.run(cleared_id) as run:  # the tombstone cleared its kill
            run.step("back to work")

    await issue(worker, "RESUME", "agent", agent_id)
    await read_until(
        bootstrap_servers,
        CONTROL,
        lambda seen: any(
            v and v["kind"] == "RESUME" and v["target_id"] == agent_id for _, v in seen
        ),
        what="the RESUME",
    )
    with Monitor(settings) as resumed, resumed.run(agent_id) as run:
        run.step("resumed")


async def test_pause_blocks_at_the_next_step_and_resume_continues_where_it_stopped(
    monitor: Monitor, worker: WorkerProcess, bootstrap_servers: str, workers: list[_Worker]
) -> None:
    agent = await _start(workers, _Worker(monitor, unique("pausable")))
    await issue(worker, "PAUSE", "agent", agent.agent_id)
    paused = await _events(
        bootstrap_servers, agent.agent_id, lambda es: _acks(es, "paused"), "the paused ack"
    )
    paused_at = _acks(paused, "paused")[0]
    assert agent.is_alive() and agent.outcome is None

    await issue(worker, "RESUME", "agent", agent.agent_id)
    events = await _events(
        bootstrap_servers,
        agent.agent_id,
        lambda es: (
            [e for e in es if e["event_type"] == "step_start" and e["step_index"] >= 1]
            and _acks(es, "resumed")
            and any(e["step_index"] > paused_at["step_index"] + 2 for e in es)
        ),
        "steps after the resume",
    )
    resumed_at = _acks(events, "resumed")[0]
    steps = [e for e in events if e["event_type"] == "step_start"]
    assert [e["step_index"] for e in steps] == list(range(1, len(steps) + 1)), "no step lost"
    after_pause = [e for e in steps if e["step_index"] > paused_at["step_index"]]
    assert after_pause and all(e["emitted_at"] > resumed_at["emitted_at"] for e in after_pause), (
        "a paused agent must not take another step before RESUME"
    )


async def test_rollback_compensates_in_reverse_and_escalates_what_it_cannot_undo(
    bootstrap_servers: str, worker: WorkerProcess
) -> None:
    undone: list[str] = []
    flaky = {"failures": 1}

    def refund(args: Any, result: Any) -> None:
        if flaky["failures"]:
            flaky["failures"] -= 1
            raise ConnectionError("payment gateway busy")
        undone.append(f"refund {result}")

    registry = ActionRegistry()
    registry.register("create_file", kind="write", compensate=lambda a, r: undone.append(a["path"]))
    registry.register("charge_card", kind="write", compensate=refund)
    registry.register("send_email", kind="irreversible")
    registry.register("lookup", kind="read")

    agent_id = unique("rollback")
    settings = load_settings(bootstrap_servers=bootstrap_servers)
    with Monitor(settings, registry=registry) as monitor:
        with monitor.run(agent_id) as run:
            run.step("act")
            run.tool_call("lookup", {"q": "customer"})
            run.tool_call("create_file", {"path": "/tmp/a"})
            with run.tool("charge_card", {"amount": 20}) as call:
                call.response_received(result="ch_42")
            run.tool_call("send_email", {"to": "x@example.com"})
            run.tool_call("mystery_tool", {})
            run.tool_call("create_file", {"path": "/tmp/b"})
            task_id = run.task_id
        issued = await issue(worker, "ROLLBACK", "task", task_id, reason="bad batch")
        events = await _events(
            bootstrap_servers,
            agent_id,
            lambda es: _acks(es, "rolled_back"),
            "the rolled_back ack",
        )
    assert undone == ["/tmp/b", "refund ch_42", "/tmp/a"], "compensations newest first"
    compensations = [
        (e["tool_name"], e["status"]) for e in events if e["event_type"] == "compensation"
    ]
    assert compensations == [
        ("create_file", "ok"),
        ("charge_card", "error"),
        ("charge_card", "ok"),
        ("create_file", "ok"),
    ]
    assert _acks(events, "rolled_back")[0]["command_id"] == issued["command_id"]
    escalations = await read_until(
        bootstrap_servers,
        ESCALATIONS,
        lambda seen: len([v for _, v in seen if v and v["task_id"] == task_id]) >= 2,
        what="two escalations",
    )
    reasons = {v["tool_name"]: v["reason"] for _, v in escalations if v and v["task_id"] == task_id}
    assert reasons == {"mystery_tool": "unregistered", "send_email": "irreversible"}


async def test_unsigned_forged_expired_and_replayed_commands_are_rejected_and_reported(
    bootstrap_servers: str, worker: WorkerProcess, workers: list[_Worker]
) -> None:
    settings = load_settings(bootstrap_servers=bootstrap_servers)
    with Monitor(settings) as monitor:
        agent = await _start(workers, _Worker(monitor, unique("guarded")))
        genuine = CommandSigner(DEV_SIGNING_KEYS)
        forger = CommandSigner("dev:a-secret-the-attacker-guessed")

        def kill(**fields: Any) -> dict[str, Any]:
            return {**new_command("KILL", "agent", agent.agent_id, "attack", issuer="x"), **fields}

        resume = genuine.sign(new_command("RESUME", "agent", agent.agent_id, "ok", issuer="x"))
        attacks = [
            kill(),  # unsigned
            forger.sign(kill()),
            genuine.sign(kill(expires_at=now_us() - 1_000_000)),
            resume,
            resume,  # the same bytes again: a replay
        ]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
        await producer.start()
        try:
            for command in attacks:
                await producer.send_and_wait(
                    CONTROL, codec.encode("trc.ControlCommand", command), key=command_key(command)
                )
        finally:
            await producer.stop()
        expected = {"unsigned": 1, "forged": 1, "expired": 1, "replayed": 1}
        await until(
            lambda: (
                {k: v for k, v in monitor.stats()["rejected_commands"].items() if v} == expected
            ),
            within_s=20,
            what=f"rejections {expected} (have {monitor.stats()['rejected_commands']})",
        )
        assert agent.is_alive() and agent.outcome is None, "a rejected command took effect"
        agent.stop.set()
        await asyncio.to_thread(agent.join, 20)
        assert agent.outcome == "finished"

    events = await _events(
        bootstrap_servers,
        agent.agent_id,
        lambda es: len([e for e in es if e["event_type"] == "command_rejected"]) >= 4,
        "four command_rejected events",
    )
    reasons = sorted(e["status"] for e in events if e["event_type"] == "command_rejected")
    assert reasons == ["expired", "forged", "replayed", "unsigned"]


async def test_the_command_api_refuses_bad_requests_and_the_cli_reads_like_kubectl(
    monitor: Monitor, worker: WorkerProcess, bootstrap_servers: str
) -> None:
    body = {"kind": "KILL", "target_type": "agent", "target_id": "x"}
    assert (await asyncio.to_thread(call, worker, "POST", "/api/commands", body, ""))[0] == 401
    assert (await asyncio.to_thread(call, worker, "POST", "/api/commands", body, "wrong"))[0] == 401
    status, answer = await asyncio.to_thread(
        call, worker, "POST", "/api/commands", {**body, "kind": "EXPLODE"}
    )
    assert status == 400 and "KILL, PAUSE, RESUME, ROLLBACK" in answer["error"]

    env = {**os.environ, "TRC_BOOTSTRAP_SERVERS": bootstrap_servers}
    trc = [sys.executable, "-m", "app.cli"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*trc, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def kill_when_known(agent_id: str) -> subprocess.CompletedProcess[str]:
        # The worker refuses a target until the agent's first events reached it.
        deadline = time.monotonic() + 20
        while True:
            done = cli("kill", "--agent", agent_id, "--server", worker.url(""), "-o", "json")
            if done.returncode != 1 or time.monotonic() > deadline:
                return done

    unknown = await asyncio.to_thread(
        cli, "kill", "--agent", unique("nobody"), "--server", worker.url("")
    )
    assert unknown.returncode == 1 and "unknown agent" in unknown.stderr, unknown.stderr
    down = await asyncio.to_thread(cli, "pause", "--all", "--server", "http://127.0.0.1:9")
    assert down.returncode == 3 and "does not answer" in down.stderr

    agent_id = unique("audited")
    with monitor.run(agent_id) as run:
        run.step("visible")
        killed = await asyncio.to_thread(kill_when_known, agent_id)
        assert killed.returncode == 0, killed.stderr
        command_id = json.loads(killed.stdout)["command_id"]
        with pytest.raises(AgentKilled):
            await until(lambda: run.killed, within_s=20, what="the CLI's kill")
            run.step("after the kill")

    def acked() -> bool:
        audit = cli("audit", "-o", "json")
        rows = json.loads(audit.stdout) if audit.returncode == 0 else []
        return any(r["command_id"] == command_id and r["acks"] for r in rows)

    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(acked):
        assert time.monotonic() < deadline, "the kill and its ack never reached trc audit"
    table = await asyncio.to_thread(cli, "audit")
    assert table.returncode == 0 and command_id[:12] in table.stdout
    assert table.stdout.splitlines()[0].split()[:3] == ["TIME", "COMMAND", "KIND"]
