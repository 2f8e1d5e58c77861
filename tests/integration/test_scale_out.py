"""Two workers share the agents; when one leaves, the other takes its agents over.

The leaving worker stops with SIGTERM (a clean leave of the group). A worker
killed with SIGKILL is handed over only when the broker expires its session:
measured on the embedded Tansu broker, that did not happen within 75 s, so
that case waits for a Kafka broker (testcontainers or KAFKA_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from agents_bridge import AgentKilled, Monitor, load_settings
from agents_bridge.topics import CONTROL, events_topic
from app.ingest import shard_of
from app.worker_process import WorkerProcess
from tests.conftest import ARTIFACTS, free_port
from tests.integration.conftest import unique, worker_env
from tests.integration.topic_reader import read_until

pytestmark = pytest.mark.integration


async def _loop_until_killed(monitor: Monitor, agent_id: str) -> str:
    try:
        async with monitor.run(agent_id) as run:
            for _ in range(3):
                run.tool_call("search", {"q": "same"})
            await asyncio.wait_for(asyncio.Event().wait(), 60)
    except AgentKilled:
        return run.task_id
    raise AssertionError(f"{agent_id} was not killed")


def _one_per_shard() -> list[str]:
    """Agent ids covering every shard: some of them were the leaving worker's."""
    shards = load_settings().partitions
    by_shard: dict[int, str] = {}
    while len(by_shard) < shards:
        agent_id = unique("after-crash")
        by_shard.setdefault(shard_of(events_topic(agent_id), shards), agent_id)
    return list(by_shard.values())


async def test_workers_share_agents_and_hand_them_over_when_one_leaves(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    env = worker_env(bootstrap_servers)
    workers = [
        WorkerProcess(
            {**env, "TRC_WEB_PORT": str(free_port()), "TRC_DATA_DIR": str(tmp_path / name)},
            ARTIFACTS / f"worker-{env['TRC_APP_ID']}-{name}.log",
        )
        for name in ("a", "b")
    ]
    try:
        await asyncio.gather(*(asyncio.to_thread(w.start, 90) for w in workers))
        with Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as monitor:
            tasks = await asyncio.gather(
                *(_loop_until_killed(monitor, unique("shared")) for _ in range(6))
            )
            shares = [await asyncio.to_thread(w.metric, "trc_agent_topics") for w in workers]
            assert all(share > 0 for share in shares), f"one worker ingests nothing: {shares}"

            await asyncio.to_thread(workers[0].stop)  # leaves the group: a rebalance follows
            survivors = await asyncio.gather(
                *(_loop_until_killed(monitor, agent_id) for agent_id in _one_per_shard())
            )
        ours = f"{env['TRC_APP_ID']}/"
        commands = await read_until(
            bootstrap_servers,
            CONTROL,
            lambda seen: (
                {v["target_id"] for _, v in seen if v and v["issuer"].startswith(ours)}
                >= set(tasks) | set(survivors)
            ),
            what="the KILL commands",
            within_s=30,
        )
        # Other workers on a shared test broker watch the same agents: count ours only.
        kills = Counter(
            v["target_id"]
            for _, v in commands
            if v and v["issuer"].startswith(ours) and v["kind"] == "KILL"
        )
        assert all(kills[task] == 1 for task in tasks), f"each agent killed once: {kills}"
        assert all(kills[task] == 1 for task in survivors), f"handed over: {kills}"
    finally:
        for worker in workers:
            worker.stop()
