"""Detection engine behaviours through a real worker and broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents_bridge import AgentKilled, Monitor, load_settings
from agents_bridge.topics import ANOMALIES
from app.topic_specs import TopicSpec, ensure_topics
from app.worker_process import WorkerProcess, WorkerStartError
from tests.conftest import ARTIFACTS
from tests.integration.conftest import unique, worker_env
from tests.integration.topic_reader import read_until, until
from tests.integration.topic_writer import TopicWriter, agent_event

pytestmark = pytest.mark.integration

POLICY = """
[defaults.steps]
warn = 50
kill = 60

[agent_types.planner]
categories = { step_count = "recoverable", token_growth = "recoverable" }
steps = { warn = 2, kill = 3 }
"""


def _anomalies_for(agent_id: str, detector: str):  # type: ignore[no-untyped-def]
    return lambda seen: any(
        v and v["agent_id"] == agent_id and v["detector"] == detector for _, v in seen
    )


def _start_and_kill_executor(bootstrap_servers: str, agent_id: str) -> None:
    """An agent process that beats every 0.3 s, killed with SIGKILL: no goodbye beat."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.silent_agent", bootstrap_servers, agent_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.kill()
        child.wait()


async def test_a_killed_executor_goes_silent_and_raises_an_alert(
    worker: WorkerProcess, bootstrap_servers: str
) -> None:
    agent_id = unique("executor")
    await asyncio.to_thread(_start_and_kill_executor, bootstrap_servers, agent_id)
    seen = await read_until(
        bootstrap_servers,
        ANOMALIES,
        _anomalies_for(agent_id, "silent_agent"),
        what=f"a silent_agent alert for {agent_id}",
    )
    alert = next(v for _, v in seen if v and v["agent_id"] == agent_id)
    assert alert["category"] == "recoverable" and alert["command_id"] is None


async def test_a_cleanly_closed_monitor_is_not_reported_silent(
    worker: WorkerProcess, bootstrap_servers: str
) -> None:
    quiet_id, witness_id = unique("quiet"), unique("witness")
    settings = load_settings(bootstrap_servers=bootstrap_servers, heartbeat_interval_s=0.3)
    with Monitor(settings) as monitor:
        run = monitor.run(quiet_id).__enter__()
        run.step("think")
        monitor.flush()
    # A witness killed afterwards proves the timer ran long enough to have seen the quiet one.
    await asyncio.to_thread(_start_and_kill_executor, bootstrap_servers, witness_id)
    seen = await read_until(
        bootstrap_servers,
        ANOMALIES,
        _anomalies_for(witness_id, "silent_agent"),
        what="the witness's silent_agent alert",
    )
    assert not any(v and v["agent_id"] == quiet_id for _, v in seen)


@pytest.fixture(scope="module")
def policy_worker(
    bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    policy = tmp_path_factory.mktemp("policy") / "policy.toml"
    policy.write_text(POLICY)
    env = worker_env(bootstrap_servers, TRC_POLICY_FILE=str(policy))
    with WorkerProcess(env, Path(ARTIFACTS) / f"worker-{env['TRC_APP_ID']}.log") as process:
        yield process


async def test_two_recoverable_breaches_in_one_task_escalate_to_a_kill(
    policy_worker: WorkerProcess, bootstrap_servers: str
) -> None:
    agent_id = unique("planner")
    with Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as monitor:

        async def planner() -> None:
            async with monitor.run(agent_id, agent_type="planner") as run:
                run.step("plan")  # steps: warn at 2, breach at 3 for planners
                run.llm_call(prompt_tokens=250, completion_tokens=50)
                run.step("plan")
                run.llm_call(prompt_tokens=250, completion_tokens=50)
                run.step("plan")  # step_count breach: recoverable, alert only
                run.llm_call(prompt_tokens=1500, completion_tokens=300)  # 6x: token_growth
                await asyncio.Event().wait()

        with pytest.raises(AgentKilled) as killed:
            await asyncio.wait_for(planner(), timeout=30)
    assert "correlated breaches" in killed.value.command["reason"]
    assert "step_count" in killed.value.command["reason"]
    assert "token_growth" in killed.value.command["reason"]
    seen = await read_until(
        bootstrap_servers,
        ANOMALIES,
        _anomalies_for(agent_id, "token_growth"),
        what="the token_growth anomaly",
    )
    # Other test workers on the same broker report too: look for this worker's records.
    mine = [v for _, v in seen if v and v["agent_id"] == agent_id]
    command_id = killed.value.command["command_id"]
    assert any(v["detector"] == "token_growth" and v["command_id"] == command_id for v in mine)
    assert any(v["detector"] == "step_count" and v["command_id"] is None for v in mine), (
        "alone, the step count breach only alerted"
    )


async def test_default_agents_keep_the_default_thresholds(
    policy_worker: WorkerProcess, bootstrap_servers: str
) -> None:
    agent_id, witness_id = unique("generalist"), unique("planner")
    with Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as monitor:
        with monitor.run(agent_id) as run:  # no agent type: steps warn at 50
            for _ in range(5):
                run.step("work")
        with monitor.run(witness_id, agent_type="planner") as run:
            for _ in range(2):
                run.step("work")  # a planner warns at 2
        monitor.flush()
    seen = await read_until(
        bootstrap_servers,
        ANOMALIES,
        _anomalies_for(witness_id, "step_count"),
        what="the planner's step_count warning",
    )
    assert not any(v and v["agent_id"] == agent_id for _, v in seen)


def _sample(worker: WorkerProcess, series: str) -> float | None:
    """The value of one exported series (name and labels as exposed), or None."""
    with urllib.request.urlopen(worker.url("/metrics"), timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{series} "):
                return float(line.split()[1])
    return None


async def test_the_worker_exports_how_far_behind_it_runs_and_its_table_sizes(
    quiet_broker: str,
) -> None:
    bootstrap_servers = quiet_broker  # table sizes must count this test's tasks only
    env = worker_env(bootstrap_servers)
    agent_ids = [unique("sized") for _ in range(3)]
    with WorkerProcess(env, Path(ARTIFACTS) / f"worker-{env['TRC_APP_ID']}.log") as worker:
        with Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as monitor:
            for agent_id in agent_ids:
                with monitor.run(agent_id) as run:
                    for step in range(5):
                        run.step(f"step {step}")
            assert monitor.flush(10)
        sent = 3 * 7  # task_start, 5 steps, task_end each
        deadline = asyncio.get_running_loop().time() + 30
        while (done := worker.metric("trc_events_processed_total")) < sent:
            assert asyncio.get_running_loop().time() < deadline, f"processed {done} of {sent}"
            await asyncio.sleep(0.1)
        # Every processed event is timed from its emission.
        assert _sample(worker, "trc_processing_delay_seconds_count") == done
        assert _sample(worker, 'trc_table_keys{table="tasks"}') == 3
        assert _sample(worker, 'trc_table_keys{table="fleet-tasks"}') == 3
        assert _sample(worker, "trc_ingest_lag_records") == 0
        # The same event twice (a resend after a lost acknowledgement) counts once.
        resent = agent_event(agent_ids[0], event_type="task_start", task_id=unique("resent"))
        async with TopicWriter(bootstrap_servers) as writer:
            await writer.send(agent_ids[0], [resent, resent])
        await until(
            lambda: worker.metric("trc_events_duplicate_total") >= 1,
            within_s=30,
            what="a duplicate counted",
        )
        assert worker.metric("trc_events_processed_total") == done + 1
        assert _sample(worker, "trc_processing_delay_seconds_count") == done + 1
        assert _sample(worker, 'trc_table_keys{table="tasks"}') == 4


def test_a_partition_count_that_differs_from_the_topics_stops_the_worker(
    bootstrap_servers: str,
) -> None:
    # Shards and table partitions are computed from TRC_PARTITIONS: a worker started
    # with another value than the topics were created with must refuse, not misroute.
    env = worker_env(bootstrap_servers, TRC_PARTITIONS="2")
    settings = load_settings(bootstrap_servers=bootstrap_servers)
    by_chain = TopicSpec(f"{env['TRC_APP_ID']}-events-by-chain", 3)
    asyncio.run(ensure_topics(settings, [by_chain]))
    log = Path(ARTIFACTS) / f"worker-{env['TRC_APP_ID']}.log"
    worker = WorkerProcess(env, log)
    try:
        with pytest.raises(WorkerStartError, match="exited with code 1"):
            worker.start(timeout=45)
    finally:
        worker.stop()
    assert "SettingsError: TRC_PARTITIONS is 2 but" in log.read_text(), worker.log_tail()
