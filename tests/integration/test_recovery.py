"""Windows survive a worker restart: the tables are changelog-backed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agents_bridge import AgentKilled, Monitor, load_settings
from app.worker_process import WorkerProcess
from tests.conftest import ARTIFACTS
from tests.integration.conftest import unique, worker_env

pytestmark = pytest.mark.integration


async def _until_processed(worker: WorkerProcess, count: int) -> None:
    deadline = time.monotonic() + 20
    while (seen := await asyncio.to_thread(worker.metric, "trc_events_processed_total")) < count:
        assert time.monotonic() < deadline, f"worker processed {seen} of {count} events in 20 s"
        await asyncio.sleep(0.1)


async def test_a_restarted_worker_recovers_its_windows_from_the_changelog(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    env = worker_env(bootstrap_servers, TRC_TABLE_STORE="rocksdb://")
    agent_id = unique("restart")
    first = WorkerProcess(
        {**env, "TRC_DATA_DIR": str(tmp_path / "first")},
        ARTIFACTS / f"worker-{env['TRC_APP_ID']}-first.log",
    )
    # A new worker with an empty data directory: only the changelog can tell it.
    second = WorkerProcess(
        {**env, "TRC_DATA_DIR": str(tmp_path / "second")},
        ARTIFACTS / f"worker-{env['TRC_APP_ID']}-second.log",
    )
    first.start()
    try:
        with (
            Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as monitor,
            pytest.raises(AgentKilled),
        ):
            async with monitor.run(agent_id) as run:
                run.tool_call("search", {"q": "same"})
                run.tool_call("search", {"q": "same"})
                assert monitor.flush(10)
                await _until_processed(first, 3)  # task_start + two calls
                first.stop()
                await asyncio.to_thread(second.start)
                run.tool_call("search", {"q": "same"})  # the third equivalent call
                await asyncio.wait_for(asyncio.Event().wait(), 30)
    finally:
        first.stop()
        second.stop()


async def test_sigterm_drains_commits_and_the_next_worker_resumes_after_it(
    quiet_broker: str, tmp_path: Path
) -> None:
    bootstrap_servers = quiet_broker  # counts must not include other tests' agents
    env = worker_env(bootstrap_servers)
    agent_id = unique("drained")
    workers = [
        WorkerProcess(
            {**env, "TRC_DATA_DIR": str(tmp_path / name)},
            ARTIFACTS / f"worker-{env['TRC_APP_ID']}-{name}.log",
        )
        for name in ("before", "after")
    ]
    await asyncio.to_thread(workers[0].start)
    try:
        with Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as monitor:
            with monitor.run(agent_id) as run:
                for step in range(20):
                    run.step(f"step {step}")
            assert monitor.flush(10)
            await _until_processed(workers[0], 22)  # task_start, 20 steps, task_end
            # SIGTERM: the worker drains, commits its offsets and exits by itself.
            assert await asyncio.to_thread(workers[0].stop, 30.0) == 0, workers[0].log_tail()

            await asyncio.to_thread(workers[1].start)
            with monitor.run(agent_id) as run:
                run.step("after the restart")
            assert monitor.flush(10)
            await _until_processed(workers[1], 3)
        ingested = await asyncio.to_thread(workers[1].metric, "trc_events_ingested_total")
        assert ingested == 3, f"the next worker re-read {ingested - 3:.0f} committed events"
    finally:
        for worker in workers:
            worker.stop()
