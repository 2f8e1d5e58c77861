"""Two workers of one deployment: either serves the whole fleet, every trace, all live events."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.partitioner import murmur2

from agents_bridge import Monitor, load_settings
from app.worker_process import WorkerProcess
from tests.conftest import ARTIFACTS, free_port
from tests.integration.conftest import unique, worker_env
from tests.integration.worker_api import call, get

pytestmark = pytest.mark.integration


def command(kind: str, chain: str) -> dict[str, str]:
    return {"kind": kind, "target_type": "chain", "target_id": chain}


def chain_per_partition(partitions: int) -> list[str]:
    """Correlation ids covering every partition of the re-keyed stream (murmur2, as sent)."""
    found: dict[int, str] = {}
    while len(found) < partitions:
        cid = unique("chain")
        found.setdefault((murmur2(cid.encode()) & 0x7FFFFFFF) % partitions, cid)
    return [found[p] for p in range(partitions)]


async def until(check: Any, what: str, within_s: float = 30.0) -> Any:
    deadline = time.monotonic() + within_s
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.2)
    pytest.fail(f"{what} within {within_s} s")


async def test_any_worker_answers_for_the_whole_deployment(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    env = worker_env(bootstrap_servers)
    a, b = (
        WorkerProcess(
            {**env, "TRC_WEB_PORT": str(free_port()), "TRC_DATA_DIR": str(tmp_path / name)},
            ARTIFACTS / f"worker-{env['TRC_APP_ID']}-fanout-{name}.log",
        )
        for name in ("a", "b")
    )
    try:
        await asyncio.gather(asyncio.to_thread(a.start, 90), asyncio.to_thread(b.start, 90))
        await until(
            lambda: get(a, "/api/status")[1]["peers"] and get(b, "/api/status")[1]["peers"],
            "each worker knows the other",
        )
        chains = chain_per_partition(load_settings().partitions)
        agents = {cid: unique("fanned") for cid in chains}
        with Monitor(load_settings(bootstrap_servers=bootstrap_servers)) as monitor:
            for cid, agent in agents.items():
                with monitor.run(agent, correlation_id=cid) as run:
                    run.step("work")
            assert monitor.flush(10)

            def local_chains(worker: WorkerProcess) -> set[str]:
                return {c for c in chains if get(worker, f"/api/trace/{c}?local=1")[0] == 200}

            await until(
                lambda: local_chains(a) | local_chains(b) == set(chains), "every chain stored"
            )
            on_a, on_b = local_chains(a), local_chains(b)
            assert on_a and on_b and not on_a & on_b, f"split: {on_a} / {on_b}"

            for worker in (a, b):
                status, fleet = get(worker, "/api/fleet")
                assert status == 200
                assert set(agents.values()) <= {r["agent_id"] for r in fleet["agents"]}
                for cid in chains:
                    status, trace = get(worker, f"/api/trace/{cid}")
                    assert status == 200 and trace["agents"] == [agents[cid]]
                status, tasks = get(worker, "/api/tasks?limit=1000")
                assert set(agents.values()) <= {t["agent_id"] for t in tasks["tasks"]}

            # Either worker's command API knows the chains the other one holds.
            for worker, theirs in ((a, on_b), (b, on_a)):
                for cid in theirs:
                    status, answer = call(worker, "POST", "/api/commands", command("PAUSE", cid))
                    assert status == 202, f"{worker.url('')} refused {cid}: {answer}"
                    assert call(worker, "POST", "/api/commands", command("RESUME", cid))[0] == 202

            # A's live stream relays what B's partitions see.
            b_chain = sorted(on_b)[0]
            async with (
                aiohttp.ClientSession() as session,
                session.get(a.url(f"/api/stream?chain={b_chain}")) as response,
            ):

                async def first_event() -> dict[str, Any]:
                    kind = ""
                    async for raw in response.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: ") and kind == "event":
                            data: dict[str, Any] = json.loads(line[6:])
                            if data["type"] == "step_start" and data["action"] == "relayed":
                                return data
                    raise AssertionError("the stream ended")

                waiter = asyncio.ensure_future(first_event())
                await until(
                    lambda: get(b, "/api/status")[1]["stream_subscribers"] >= 1,
                    "A relays B's live stream",
                )
                with monitor.run(agents[b_chain], correlation_id=b_chain) as run:
                    run.step("relayed")
                event = await asyncio.wait_for(waiter, 10)
                assert event["chain"] == b_chain
    finally:
        a.stop()
        b.stop()
