"""Benchmarks: print a readable table and JSON, each figure beside its baseline.

    python -m bench.run            # all benchmarks on a fresh embedded broker
    python -m bench.run emit       # one of: emit, kill, throughput
    python -m bench.run --bootstrap kafka-0:9092   # on a Kafka cluster of its own

--bootstrap runs everything on that cluster instead of the embedded broker. Its
worker detects and commands every agent whose topic it finds, so the cluster
must hold no agent topics: the benchmark refuses one that does, and deletes
the topics it created when it ends (bench/cluster.py).

emit  - cost of one emit on the agent's own thread (target p99 < 50 µs),
        baseline: queue.Queue.put_nowait of the same dict, in the same run.
throughput - events per second through one worker with every detector on,
        from a backlog of pre-produced events (target 50,000/s),
        baseline: a bare consumer decoding the same backlog.
kill  - offending event emitted -> agent halted (target p99 < 100 ms) with a
        steady background load, for agents whose topic already exists and for
        brand-new agents (topic discovery included; target < 1 s), and the
        worker's detection latency (emitted -> decision, from the anomaly
        records; target p99 < 50 ms at 2,000 events/s from 200 agents),
        baseline: one produce -> consume round trip on the same broker, before
        the load starts, and again at the end under the load; and the CPU the
        broker, the worker and the agents' process used meanwhile (one core = 100%).
        --churn R adds R agents per second that come and go (a new topic each).
        --burst K (default 20): then K agents start looping at the same moment, a
        fleet-wide incident: emitted -> halted for each (the max is the last one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import queue
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents_bridge import AgentKilled, Monitor, load_settings
from agents_bridge.topics import ANOMALIES, EVENTS_PREFIX
from app.broker import EmbeddedBroker
from app.recordings import read_records
from app.worker_process import WorkerProcess, cpu_seconds
from bench.broker import round_trips
from bench.cluster import agent_topics, borrowed, create_topics
from bench.stats import machine, report, summarize
from bench.worker import worker_env
from tests.conftest import free_port

_PROCESSED = "trc_events_processed_total"


def bench_emit(monitor: Monitor, n: int = 20_000) -> dict[str, Any]:
    run = monitor.run(f"bench-emit-{uuid.uuid4().hex[:6]}")
    with run:
        costs = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            run.step("act")
            costs.append((time.perf_counter_ns() - t0) / 1000)
            if i % 5000 == 0:
                monitor.flush()  # keep the queue short, as a live agent would
        base_q: queue.Queue[dict[str, Any]] = queue.Queue()
        baseline = []
        for i in range(n):
            record = {"event_id": uuid.uuid4().hex, "step_index": i, "emitted_at": time.time_ns()}
            t0 = time.perf_counter_ns()
            base_q.put_nowait(record)
            baseline.append((time.perf_counter_ns() - t0) / 1000)
    monitor.flush()
    return {
        "unit": "µs",
        "emit step event": summarize(costs),
        "baseline queue.put_nowait": summarize(baseline),
    }


async def _round_trip(bootstrap: str, n: int) -> list[float]:
    topic = f"bench.rtt.{uuid.uuid4().hex[:6]}"
    await create_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=50)
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm", partition=0)
        return await round_trips(producer, consumer, TopicPartition(topic, 0), n)
    finally:
        await producer.stop()
        await consumer.stop()


_KILL_WAIT_S = 10.0


async def _kill_once(monitor: Monitor, agent_id: str) -> tuple[float, float] | None:
    """Emit a loop; (3rd call emitted -> halted, command issued -> halted) in ms, or None
    if the agent was not halted within ``_KILL_WAIT_S``."""
    emitted = 0.0

    async def looping() -> None:
        nonlocal emitted
        async with monitor.run(agent_id) as run:
            for _ in range(3):
                emitted = time.time()
                run.tool_call("kb_search", {"q": "same"})
            await asyncio.Event().wait()

    try:
        await asyncio.wait_for(looping(), _KILL_WAIT_S)
    except AgentKilled as exc:
        halted = time.time()
        issued = exc.command["issued_at"] / 1e6
        return (halted - emitted) * 1000, (halted - issued) * 1000
    except TimeoutError:
        print(f"\n  {agent_id} not halted within {_KILL_WAIT_S:.0f} s", file=sys.stderr)
    return None


async def _detection_latencies(bootstrap: str, agent_prefix: str, since_us: int) -> list[float]:
    """The worker's emitted -> decision latency (ms) of the loop kills of the benchmark
    decided from ``since_us`` on."""
    anomalies = await read_records(bootstrap, lambda topic: topic == ANOMALIES, "trc.Anomaly")
    return [
        a["detection_latency_ms"]
        for a in anomalies
        if a["agent_id"].startswith(agent_prefix)
        and a["detector"] == "reasoning_loop"
        and a["command_id"]
        and a["detected_at"] >= since_us
    ]


async def _burst(monitor: Monitor, name: str, agents: int) -> list[tuple[float, float] | None]:
    """``agents`` agents start looping at the same moment (a fleet-wide incident)."""
    names = [f"{name}-{i}" for i in range(agents)]
    await asyncio.gather(*(_kill_once(monitor, n) for n in names))  # their topics; untimed
    return await asyncio.gather(*(_kill_once(monitor, n) for n in names))


def _halted(samples: list[tuple[float, float] | None], which: int) -> dict[str, Any]:
    halted = [s[which] for s in samples if s is not None]
    missed = len(samples) - len(halted)
    return {**summarize(halted), "not halted in 10 s": missed}


def _background_load(monitor: Monitor, agents: int, rate: float, stop: threading.Event) -> None:
    runs = [monitor.run(f"bench-load-{i}-{uuid.uuid4().hex[:4]}") for i in range(agents)]
    for run in runs:
        run.__enter__()
    interval = 1.0 / rate
    i = 0
    while not stop.wait(interval):
        for run in runs:
            run.tool_call("fetch", {"page": i})  # distinct args: never a loop
        i += 1
    for run in runs:
        run.__exit__(None, None, None)


def _churn(monitor: Monitor, per_second: float, stop: threading.Event) -> None:
    """Agents that come and go: each new one (a new topic) runs one short task."""
    while not stop.wait(1.0 / per_second):
        with monitor.run(f"bench-churn-{uuid.uuid4().hex[:8]}") as run:
            run.tool_call("fetch", {"page": 0})


def _cpu_shares(pids: dict[str, int], before: dict[str, float], wall_s: float) -> str:
    """CPU each process used since ``before``, as a share of one core."""
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return ", ".join(f"{name} {100 * seconds / wall_s:.0f}%" for name, seconds in used.items())


async def bench_kill(
    monitor: Monitor,
    bootstrap: str,
    n: int,
    load_agents: int,
    pids: dict[str, int],
    churn: float = 0.0,
    burst: int = 20,
) -> dict[str, Any]:
    """``pids``: the processes whose CPU use is reported (worker, broker when local);
    ``churn``: new agents per second during the kills; ``burst``: agents that loop at
    the same moment, once."""
    rtt = await _round_trip(bootstrap, n)
    stop = threading.Event()
    load = [threading.Thread(target=_background_load, args=(monitor, load_agents, 10.0, stop))]
    if churn:
        load.append(threading.Thread(target=_churn, args=(monitor, churn, stop)))
    for thread in load:
        thread.start()
    run_id = uuid.uuid4().hex[:6]
    pids = {**pids, "agents": os.getpid()}
    cpu_before, started = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic()
    try:
        known = f"bench-known-{run_id}"
        await _kill_once(monitor, known)  # creates the topic; not measured
        timed_from_us = time.time_ns() // 1000
        known_samples = []
        for i in range(n):
            known_samples.append(await _kill_once(monitor, known))
            print(f"\r  kill {i + 1}/{n}", end="", file=sys.stderr)
        new_samples = [
            await _kill_once(monitor, f"bench-new-{run_id}-{uuid.uuid4().hex[:8]}")
            for _ in range(max(5, n // 4))
        ]
        burst_samples = await _burst(monitor, f"bench-burst-{run_id}", burst) if burst else []
        print(file=sys.stderr)
        cpu = _cpu_shares(pids, cpu_before, time.monotonic() - started)
        rtt_loaded = await _round_trip(bootstrap, n)
    finally:
        stop.set()
        for thread in load:
            thread.join()
    detection = await _detection_latencies(bootstrap, f"bench-known-{run_id}", timed_from_us)
    return {
        "unit": "ms",
        "background load": f"{load_agents} agents x 10 tool calls/s"
        + (f", {churn:g} new agents/s" if churn else ""),
        "emitted->halted, known agent": _halted(known_samples, 0),
        "issued->halted, known agent": _halted(known_samples, 1),
        "emitted->decision in the worker, known agent": summarize(detection),
        "emitted->halted, new agent (discovery)": _halted(new_samples, 0),
        f"emitted->halted, {burst} agents looping at once": _halted(burst_samples, 0),
        "baseline produce->consume round trip": summarize(rtt),
        "produce->consume round trip at the end, loaded": summarize(rtt_loaded),
        "CPU during the kills (one core = 100%)": cpu,
    }


async def _produce_backlog(bootstrap: str, prefix: str, agents: int, per_agent: int) -> int:
    """Realistic mixed traffic: steps, tool calls with distinct args, LLM calls."""
    from agents_bridge.codec import codec
    from agents_bridge.topics import events_topic

    await create_topics(bootstrap, [events_topic(f"{prefix}-{a}") for a in range(agents)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262144)
    await producer.start()
    total = 0
    try:
        now = time.time_ns() // 1000
        for a in range(agents):
            agent_id = f"{prefix}-{a}"
            task_id = uuid.uuid4().hex
            futures = []
            for i in range(per_agent):
                kind = ("step_start", "tool_call", "llm_call")[i % 3]
                event = {
                    "event_id": uuid.uuid4().hex,
                    "event_type": kind,
                    "agent_id": agent_id,
                    "task_id": task_id,
                    "correlation_id": task_id,
                    "step_index": i // 3,
                    "emitted_at": now + i,
                    "tool_name": "fetch" if kind == "tool_call" else None,
                    "tool_args_hash": uuid.uuid4().hex if kind == "tool_call" else None,
                    "duration_ms": 120.0 if kind == "tool_call" else None,
                    "prompt_tokens": 300 if kind == "llm_call" else 0,
                    "completion_tokens": 50 if kind == "llm_call" else 0,
                }
                value = codec.encode("trc.AgentEvent", event)
                futures.append(
                    await producer.send(events_topic(agent_id), value, key=task_id.encode())
                )
            await asyncio.gather(*futures)
            total += per_agent
        return total
    finally:
        await producer.stop()


async def _bare_consume_rate(bootstrap: str, prefix: str, expected: int) -> float:
    from agents_bridge.codec import codec

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
    )
    consumer.subscribe(pattern=f"^{re.escape(EVENTS_PREFIX + prefix)}-.*")
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < expected:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                started = started or time.perf_counter()
                for record in records:
                    codec.decode(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()


def _drain_rate(app: WorkerProcess, total: int, label: str) -> dict[str, Any]:
    """Events/s while ``app`` works through the backlog, and its events per CPU-second."""
    started, first, last, samples = None, 0.0, 0.0, []
    assert app.pid is not None
    pid = app.pid
    deadline = time.monotonic() + 600
    while last < total and time.monotonic() < deadline:
        time.sleep(0.5)
        done = app.metric(_PROCESSED)
        if done > 0 and started is None:
            started, first, cpu_start = time.perf_counter(), done, cpu_seconds(pid)
        if started is not None and done > last:
            samples.append((time.perf_counter(), done, cpu_seconds(pid)))
        last = done
        print(f"\r  {label}: processed {int(last):,}/{total:,}", end="", file=sys.stderr)
    print(file=sys.stderr)
    if not samples or started is None or samples[-1][0] == started:
        return {**summarize([]), "n": int(last)}
    end, done, cpu_end = samples[-1]
    rate = (done - first) / (end - started)
    per_cpu = (done - first) / max(cpu_end - cpu_start, 1e-9)
    return {
        "n": int(last),
        "median": rate,
        "p99": rate,
        "max": rate,
        "per CPU-second": int(per_cpu),
    }


def bench_throughput(bootstrap: str, workdir: Path, agents: int, per_agent: int) -> dict[str, Any]:
    prefix = f"bench-tp-{uuid.uuid4().hex[:6]}"  # a rerun on the same cluster reads only its own
    total = asyncio.run(_produce_backlog(bootstrap, prefix, agents, per_agent))
    bare = asyncio.run(_bare_consume_rate(bootstrap, prefix, total))
    env = worker_env(bootstrap, workdir, "tp")
    with WorkerProcess(env, workdir / "worker-throughput.log") as worker:
        real = _drain_rate(worker, total, "worker")
    naive_env = worker_env(bootstrap, workdir, "naive")
    with WorkerProcess(naive_env, workdir / "naive.log", module=("bench.naive_pipeline",)) as naive:
        per_event = _drain_rate(naive, total, "naive Faust pipeline")
    return {
        "unit": "events/s",
        "backlog": f"{total:,} events from {agents} agents (steps, tool calls, LLM calls)",
        "worker, all detectors": real,
        "baseline naive Faust, per-event table write": per_event,
        "baseline bare consumer + decode": {"n": total, "median": bare, "p99": bare, "max": bare},
    }


def _wait_drained(worker: WorkerProcess, sent: int) -> None:
    """Let the worker finish the emit benchmark's backlog before measuring kills."""
    deadline = time.monotonic() + 300
    while (
        done := worker.metric("trc_events_processed_total")
    ) < sent and time.monotonic() < deadline:
        print(f"\r  worker draining {int(done):,}/{sent:,}", end="", file=sys.stderr)
        time.sleep(0.5)
    print(file=sys.stderr)


def _emit_and_kill(
    args: argparse.Namespace,
    bootstrap: str,
    broker_pid: int | None,
    workdir: Path,
    benchmarks: dict[str, Any],
) -> None:
    # The emit benchmark's 20,000-step task must not be killed as a runaway.
    env = worker_env(bootstrap, workdir, "run", long_tasks=True)
    settings = load_settings(bootstrap_servers=bootstrap, journal_dir=workdir / "journal")
    with WorkerProcess(env, workdir / "worker.log") as worker, Monitor(settings) as monitor:
        if "emit" in args.which:
            print("emit benchmark...", file=sys.stderr)
            benchmarks["emit"] = bench_emit(monitor)
            _wait_drained(worker, monitor.stats()["sent"])
        if "kill" in args.which:
            print("kill benchmark...", file=sys.stderr)
            assert worker.pid is not None
            pids = {"worker": worker.pid, **({"broker": broker_pid} if broker_pid else {})}
            benchmarks["kill"] = asyncio.run(
                bench_kill(
                    monitor,
                    bootstrap,
                    args.n,
                    args.load_agents,
                    pids,
                    churn=args.churn,
                    burst=args.burst,
                )
            )


def main() -> int:
    logging.getLogger("agents_bridge").setLevel(logging.ERROR)  # one line per kill otherwise
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", nargs="*", help="emit, kill, throughput (default: all)")
    parser.add_argument("--events", type=int, default=60_000, help="throughput backlog size")
    parser.add_argument("-n", type=int, default=40, help="kill iterations")
    parser.add_argument("--load-agents", type=int, default=50)
    parser.add_argument(
        "--churn", type=float, default=0.0, help="kill: new agents per second meanwhile"
    )
    parser.add_argument(
        "--burst", type=int, default=20, help="kill: agents that start looping at once"
    )
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--bootstrap",
        metavar="SERVERS",
        help="a Kafka cluster of the benchmark's own instead of the embedded broker",
    )
    args = parser.parse_args()
    args.which = args.which or ["emit", "kill", "throughput"]
    unknown = set(args.which) - {"emit", "kill", "throughput"}
    if unknown:
        parser.error(
            f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose emit, kill or throughput"
        )
    if args.bootstrap:
        agents = asyncio.run(agent_topics(args.bootstrap))
        if agents:
            parser.error(
                f"{args.bootstrap} holds agent topics ({', '.join(agents[:3])}"
                f"{', ...' if len(agents) > 3 else ''}): the benchmark's worker would detect "
                "and kill those agents, and count their events. Use a cluster of the "
                "benchmark's own (or delete these topics, if an earlier run left them)."
            )
    workdir = Path(tempfile.mkdtemp(prefix="trc-bench-"))
    broker_name = args.bootstrap or "embedded Tansu"
    results: dict[str, Any] = {"machine": machine(), "broker": broker_name, "benchmarks": {}}

    @contextlib.contextmanager
    def broker(log: str) -> Iterator[tuple[str, int | None]]:
        """(bootstrap servers, broker pid if local) of a fresh embedded broker, or of the
        given cluster, which gets back to the topics it had when the benchmark ends."""
        if not args.bootstrap:
            with EmbeddedBroker(free_port(), log_path=workdir / log) as embedded:
                yield embedded.bootstrap_servers, embedded.pid
            return
        with borrowed(args.bootstrap):
            yield args.bootstrap, None

    if {"emit", "kill"} & set(args.which):
        with broker("broker.log") as (bootstrap, pid):
            _emit_and_kill(args, bootstrap, pid, workdir, results["benchmarks"])
    if "throughput" in args.which:
        # A broker without the other benchmarks' agents: the throughput workers read
        # every agent topic from the start, and only the backlog must count.
        with broker("broker-throughput.log") as (bootstrap, _):
            print("throughput benchmark...", file=sys.stderr)
            results["benchmarks"]["throughput"] = bench_throughput(
                bootstrap, workdir, 100, max(3, args.events // 100)
            )
    return report(results, args.json)


if __name__ == "__main__":
    sys.exit(main())
