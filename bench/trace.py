"""Benchmark: `trc trace` for chains of 100, 1,000 and 10,000 events (target: 1,000 under 1 s).

    python -m bench.trace [--sizes 100 1000 10000] [--repeat 20] [--json out.json]

Starts its own embedded broker and worker, produces one multi-agent chain per
size straight to the agent topics (a binary tree of tasks by parent links,
steps with tool and model calls, one failing tool call deep in the tree),
waits until the worker's trace store holds the whole chain, then measures:

* ``trc trace <id>`` as a new process: what an operator waits for (interpreter
  start, HTTP, tree rendering);
* the same command in-process (HTTP + JSON + rendering, no interpreter start);
* ``GET /api/trace/<id>`` alone (the worker reads the store and builds the tree).

Baselines in the same run: ``trc --help`` as a new process (interpreter and
imports only) and ``GET /healthz`` (one HTTP round trip to the worker).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from agents_bridge.codec import codec
from agents_bridge.topics import events_topic
from app.broker import EmbeddedBroker
from app.observe_cli import get_json, render_trace
from app.worker_process import WorkerProcess
from bench.stats import machine, report, summarize
from bench.worker import worker_env
from tests.conftest import free_port


def chain_events(size: int, run: str) -> tuple[str, list[dict[str, Any]]]:
    """``size`` events of one chain over a binary tree of tasks; one tool call fails."""
    correlation_id = f"bench-trace-{run}-{size}"
    tasks = max(2, min(20, size // 100))
    per_task = size // tasks
    now = time.time_ns() // 1000
    events: list[dict[str, Any]] = []
    failed = False
    for t in range(tasks):
        agent_id = f"bench-trace-{run}-{size}-a{t}"
        task_id = f"{correlation_id}-t{t}"
        parent = f"{correlation_id}-t{(t - 1) // 2}" if t else None
        count = per_task if t < tasks - 1 else size - per_task * (tasks - 1)
        for i in range(count):
            kind = (
                "task_start"
                if i == 0
                else "task_end"
                if i == count - 1
                else ("step_start", "tool_call", "llm_call", "step_end")[i % 4]
            )
            failing = not failed and t == tasks - 1 and kind == "tool_call" and i > count // 2
            failed = failed or failing
            events.append(
                {
                    "event_id": uuid.uuid4().hex,
                    "event_type": kind,
                    "agent_id": agent_id,
                    "agent_type": "bench",
                    "task_id": task_id,
                    "correlation_id": correlation_id,
                    "parent_task_id": parent,
                    "parent_agent_id": f"bench-trace-{run}-{size}-a{(t - 1) // 2}" if t else None,
                    "step_index": i // 4,
                    "emitted_at": now + t * 1_000_000 + i * 100,
                    "action": "work" if kind == "step_start" else None,
                    "tool_name": "fetch" if kind == "tool_call" else None,
                    "tool_args_hash": uuid.uuid4().hex if kind == "tool_call" else None,
                    "duration_ms": 12.0 if kind == "tool_call" else None,
                    "status": "error" if failing else "ok",
                    "prompt_tokens": 30 if kind == "llm_call" else 0,
                    "completion_tokens": 5 if kind == "llm_call" else 0,
                }
            )
    return correlation_id, events


async def _produce(bootstrap: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262144)
    await producer.start()
    try:
        futures = [
            await producer.send(
                events_topic(e["agent_id"]),
                codec.encode("trc.AgentEvent", e),
                key=e["agent_id"].encode(),
            )
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _wait_stored(server: str, correlation_id: str, size: int, within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    held = 0
    while time.monotonic() < deadline:
        try:
            held = get_json(server, f"/api/trace/{correlation_id}")["events"]
        except Exception:
            held = 0
        if held >= size:
            return
        time.sleep(0.2)
    raise SystemExit(f"the worker holds {held} of {size} events of {correlation_id}")


def _timed(samples: int, action: Any) -> list[float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _trc(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"trc {' '.join(args)} failed ({done.returncode}): {done.stderr}")


def bench(sizes: list[int], repeat: int, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine(),
        "broker": "embedded Tansu",
        "unit": "ms",
        "target": "trc trace of a 1,000-event chain under 1,000 ms",
        "measures": {},
    }
    run = uuid.uuid4().hex[:6]
    with EmbeddedBroker(free_port(), log_path=workdir / "broker.log") as broker:
        env = worker_env(broker.bootstrap_servers, workdir, "trace", long_tasks=True)
        with WorkerProcess(env, workdir / "worker.log") as worker:
            server = worker.url("")
            measures = results["measures"]
            measures["baseline: trc --help (new process)"] = summarize(
                _timed(max(3, repeat // 2), lambda: _trc("--help"))
            )
            measures["baseline: GET /healthz"] = summarize(
                _timed(repeat, lambda: urllib.request.urlopen(worker.url("/healthz")).read())
            )
            for size in sizes:
                correlation_id, events = chain_events(size, run)
                asyncio.run(_produce(broker.bootstrap_servers, events))
                _wait_stored(server, correlation_id, size)
                trace = get_json(server, f"/api/trace/{correlation_id}")
                assert trace["root_cause"] is not None, "the failing call must be found"
                path = f"/api/trace/{correlation_id}"

                def in_process(cid: str = correlation_id) -> None:
                    render_trace(get_json(server, f"/api/trace/{cid}"), io.StringIO())

                measures[f"{size:,} events: trc trace (new process)"] = summarize(
                    _timed(
                        max(3, repeat // 2),
                        lambda c=correlation_id: _trc("trace", c, "--server", server),
                    )
                )
                measures[f"{size:,} events: trc trace (in process)"] = summarize(
                    _timed(repeat, in_process)
                )
                measures[f"{size:,} events: GET /api/trace"] = summarize(
                    _timed(repeat, lambda p=path: urllib.request.urlopen(server + p).read())
                )
                print(f"  {size:,} events measured", file=sys.stderr)
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"\nmachine: {results['machine']}, broker: {results['broker']}")
    print(f"target: {results['target']}\n")
    print(f"  {'measure (ms)':<46} {'n':>4} {'median':>9} {'p99':>9} {'max':>9}")
    for label, s in results["measures"].items():
        print(f"  {label:<46} {s['n']:>4} {s['median']:>9.1f} {s['p99']:>9.1f} {s['max']:>9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--repeat", type=int, default=20, help="samples per in-process measure")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trc-bench-trace-"))
    return report(bench(args.sizes, args.repeat, workdir), args.json, print_table)


if __name__ == "__main__":
    sys.exit(main())
