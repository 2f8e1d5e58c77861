"""The agent bridge alone: emission cost, producer throughput, journal spill and replay.

    python -m bench.bridge [--events 20000] [--rate 5000] [--json out.json]

emit      - cost of one emit on the agent's thread with 1, 10 and 100 agents in one
            process (asyncio tasks on one loop, the usual shape of an agent server)
            emitting --rate events/s together while the sender process is sending;
            target p99 < 50 µs. Then 100 agents flat out (overload: more than the
            producer sends, so the pipe to the sender fills).
            Baseline: the same paced agents, sending the same events, also put an
            event-sized dict on a queue.Queue, timed alone: what the machine's
            load and waking from a wait cost the simplest hand-off.
producer  - events/s one process gets acknowledged by the broker (acks=all),
            from the first emit until flush() returns.
            Baseline: a bare AIOKafkaProducer sending pre-encoded events.
journal   - with no broker: events/s spilled to the journal; then, once a broker
            answers on that port, events/s replayed from it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import queue
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from agents_bridge import Monitor, load_settings
from agents_bridge.codec import codec
from app.broker import EmbeddedBroker
from bench.stats import machine, report, summarize
from tests.conftest import free_port

_STEP = {"action": "act", "input_summary": "what the agent does next"}


async def _paced(
    agents: int,
    events: int,
    rate: float,
    emit: Callable[[int], None],
    untimed: Callable[[int], None],
) -> list[float]:
    """``agents`` asyncio tasks calling ``emit(agent)`` (then ``untimed(agent)``) ``events``
    times in all, ``rate`` per second together (0: as fast as they can); µs per call."""
    costs: list[float] = []
    per_agent = max(1, events // agents)
    interval = agents / rate if rate else 0.0

    async def agent(index: int) -> None:
        due = time.monotonic() + interval * index / agents  # spread the agents out
        for _ in range(per_agent):
            started = time.perf_counter_ns()
            emit(index)
            costs.append((time.perf_counter_ns() - started) / 1000)
            untimed(index)
            due += interval
            # The agent waits for its model; flat out, it only yields to the others.
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    await asyncio.gather(*(agent(i) for i in range(agents)))
    return costs


def _nothing(_: int) -> None:
    pass


def _agents_emit(
    monitor: Monitor, agents: int, events: int, rate: float, *, baseline: bool = False
) -> list[float]:
    """Step events of ``agents`` runs in one process: µs per emit. As the baseline, the
    same agents also put an event-sized dict on a queue.Queue first: µs per put."""
    prefix = f"bench-bridge-{agents}-{uuid.uuid4().hex[:4]}"
    runs = [monitor.run(f"{prefix}-{i}").__enter__() for i in range(agents)]
    baseline_queue: queue.Queue[dict[str, Any]] = queue.Queue()

    def step(index: int) -> None:
        runs[index].step(**_STEP)

    def put(index: int) -> None:
        baseline_queue.put_nowait(
            {"event_id": os.urandom(16).hex(), "agent_id": index, "emitted_at": time.time_ns()}
        )

    timed, untimed = (put, step) if baseline else (step, _nothing)
    try:
        return asyncio.run(_paced(agents, events, rate, timed, untimed))
    finally:
        for run in runs:
            run.__exit__(None, None, None)


def bench_emit(bootstrap: str, workdir: Path, events: int, rate: float) -> dict[str, Any]:
    results: dict[str, Any] = {"unit": "µs"}
    settings = load_settings(bootstrap_servers=bootstrap, journal_dir=workdir / "journal-emit")
    with Monitor(settings) as monitor:
        for agents in (1, 10, 100):
            costs = _agents_emit(monitor, agents, events, rate)
            results[f"emit, {agents} agent(s), {rate:,.0f} events/s"] = summarize(costs)
            monitor.flush(60)
        # Overload: more than the producer can send; the ring to the sender fills up.
        results["emit, 100 agents, flat out (overload)"] = summarize(
            _agents_emit(monitor, 100, events, 0)
        )
        monitor.flush(120)
        for agents in (1, 100):
            costs = _agents_emit(monitor, agents, events, rate, baseline=True)
            results[f"baseline put_nowait, {agents} agent(s), {rate:,.0f}/s"] = summarize(costs)
            monitor.flush(60)
    return results


async def _bare_producer_rate(bootstrap: str, events: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    topic = f"trc.events.bench-bare-{uuid.uuid4().hex[:6]}"
    value = codec.encode(
        "trc.AgentEvent",
        {
            "event_id": uuid.uuid4().hex,
            "event_type": "step_start",
            "agent_id": "bench-bare",
            "task_id": "t",
            "correlation_id": "t",
            "emitted_at": time.time_ns() // 1000,
            **_STEP,
        },
    )
    try:
        await producer.send_and_wait(topic, value)  # the topic exists before timing
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=b"bench-bare") for _ in range(events)]
        await asyncio.gather(*futures)
        return events / (time.perf_counter() - started)
    finally:
        await producer.stop()


def _steps_flushed(monitor: Monitor, name: str, events: int, done: str) -> float:
    """Seconds to emit ``events`` steps from one run and flush them (sent or journaled)."""
    started = time.perf_counter()
    with monitor.run(f"bench-bridge-{name}-{uuid.uuid4().hex[:4]}") as run:
        for _ in range(events):
            run.step(**_STEP)
    assert monitor.flush(120), f"the events were not {done} within 120 s"
    return time.perf_counter() - started


def bench_producer(bootstrap: str, workdir: Path, events: int) -> dict[str, Any]:
    settings = load_settings(bootstrap_servers=bootstrap, journal_dir=workdir / "journal-rate")
    with Monitor(settings) as monitor:
        with monitor.run("bench-bridge-warmup") as run:
            run.step(**_STEP)
        monitor.flush(30)
        sent_before = monitor.stats()["sent"]
        elapsed = _steps_flushed(monitor, "rate", events, "sent")
        sent = monitor.stats()["sent"] - sent_before
    return {
        "unit": "events/s",
        "bridge: emitted -> acknowledged by the broker": (
            f"{sent / elapsed:,.0f}/s ({sent:,} events)"
        ),
        "baseline: bare AIOKafkaProducer, pre-encoded": (
            f"{asyncio.run(_bare_producer_rate(bootstrap, events)):,.0f}/s"
        ),
    }


def bench_journal(workdir: Path, events: int) -> dict[str, Any]:
    port = free_port()
    settings = load_settings(
        bootstrap_servers=f"127.0.0.1:{port}",
        journal_dir=workdir / "journal-outage",
        send_timeout_s=1.0,
        control_attach_timeout_s=0,
        flush_timeout_s=120,
    )
    with Monitor(settings) as monitor:
        spill_s = _steps_flushed(monitor, "outage", events, "journaled")
        spilled = monitor.stats()["spilled"]
        with EmbeddedBroker(port, log_path=workdir / "broker-outage.log"):
            started = time.perf_counter()
            deadline = started + 300
            while monitor.stats()["journal_backlog"] and time.perf_counter() < deadline:
                time.sleep(0.05)
            replay_s = time.perf_counter() - started
            replayed = monitor.stats()["replayed"]
    return {
        "unit": "events/s",
        "spilled to the journal (no broker)": f"{spilled / spill_s:,.0f}/s ({spilled:,} events)",
        "replayed once the broker answers (incl. reconnect)": (
            f"{replayed / replay_s:,.0f}/s ({replayed:,} events)"
        ),
    }


def main() -> int:
    logging.getLogger("agents_bridge").setLevel(logging.ERROR)  # the outage is on purpose
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--rate", type=float, default=5_000, help="events/s all agents emit together"
    )
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trc-bench-bridge-"))
    results: dict[str, Any] = {"machine": machine(), "broker": "embedded Tansu", "benchmarks": {}}
    with EmbeddedBroker(free_port(), log_path=workdir / "broker.log") as broker:
        print("emit...", file=sys.stderr)
        results["benchmarks"]["emit"] = bench_emit(
            broker.bootstrap_servers, workdir, args.events, args.rate
        )
        print("producer...", file=sys.stderr)
        results["benchmarks"]["producer"] = bench_producer(
            broker.bootstrap_servers, workdir, args.events * 5
        )
    print("journal...", file=sys.stderr)
    results["benchmarks"]["journal"] = bench_journal(workdir, args.events * 5)
    return report(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
