"""A planner -> executor -> validator chain in three processes shares one correlation id."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from agents_bridge.topics import events_topic
from tests.integration.topic_reader import read_until

pytestmark = pytest.mark.integration


async def test_three_processes_share_one_chain(bootstrap_servers: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "tests.integration.chain_agent",
            bootstrap_servers,
            suffix,
            "{}",
            "planner",
            "executor",
            "validator",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    starts = {}
    for role in ("planner", "executor", "validator"):
        seen = await read_until(
            bootstrap_servers,
            events_topic(f"{role}-{suffix}"),
            lambda seen: any(v and v["event_type"] == "task_end" for _, v in seen),
            what=f"the {role}'s events",
        )
        starts[role] = next(v for _, v in seen if v and v["event_type"] == "task_start")
    planner, executor, validator = starts["planner"], starts["executor"], starts["validator"]
    assert planner["correlation_id"] == planner["task_id"], "the planner starts the chain"
    assert executor["correlation_id"] == validator["correlation_id"] == planner["correlation_id"]
    assert (executor["parent_agent_id"], executor["parent_task_id"]) == (
        f"planner-{suffix}",
        planner["task_id"],
    )
    assert (validator["parent_agent_id"], validator["parent_task_id"]) == (
        f"executor-{suffix}",
        executor["task_id"],
    )
