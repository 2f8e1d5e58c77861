"""``trc demo``: a live fleet on the embedded broker, with one runaway agent killed.

Starts the broker and a worker, runs two healthy agents (one sync, one async)
and one that loops on a tool with equivalent arguments, prints what happens
as it happens, and exits 0 only if the looping agent was killed before its
fourth equivalent call while the healthy ones finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from agents_bridge import AgentKilled, Monitor, load_settings
from agents_bridge.codec import codec
from agents_bridge.topics import ANOMALIES
from app.broker import BrokerStartError, EmbeddedBroker
from app.worker_process import WorkerProcess, WorkerStartError

__all__ = ["run_demo"]

_STEP_S = 0.4  # the looping agent's pace: a kill must land within one step


@dataclass
class _Outcome:
    agent_id: str
    status: str = "running"
    tool_calls: int = 0
    kill_latency_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    correlation_id: str = ""


def _say(who: str, message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {who:<18} {message}", flush=True)


def _healthy_sync_agent(monitor: Monitor, outcome: _Outcome) -> None:
    with monitor.run(outcome.agent_id) as run:
        for i, city in enumerate(["Oslo", "Lima", "Pune", "Kyiv", "Perth"], start=1):
            run.step("look up weather", context=f"weather report {i}")
            run.tool_call("weather", {"city": city})
            run.llm_call(prompt_tokens=300 + 20 * i, completion_tokens=80)
            outcome.tool_calls += 1
            _say(outcome.agent_id, f"step {i}: weather({city!r})")
            time.sleep(_STEP_S)
    outcome.status = "finished"
    _say(outcome.agent_id, "finished its task")


async def _healthy_async_agent(monitor: Monitor, outcome: _Outcome) -> None:
    async with monitor.run(outcome.agent_id) as run:
        for i, query in enumerate(["kafka kraft", "faust tables", "avro evolution"], start=1):
            run.step("research")
            run.tool_call("web_search", {"query": query, "top_k": 3})
            outcome.tool_calls += 1
            _say(outcome.agent_id, f"step {i}: web_search({query!r})")
            await asyncio.sleep(_STEP_S)
    outcome.status = "finished"
    _say(outcome.agent_id, "finished its task")


async def _token_hungry_agent(monitor: Monitor, outcome: _Outcome) -> None:
    # Each step's prompt grows: an alert (recoverable), not a kill.
    async with monitor.run(outcome.agent_id, agent_type="summariser") as run:
        for i, tokens in enumerate([400, 450, 1800], start=1):
            run.step("summarise")
            run.llm_call(prompt_tokens=tokens, completion_tokens=100)
            outcome.tool_calls += 1
            _say(outcome.agent_id, f"step {i}: llm call with {tokens} prompt tokens")
            await asyncio.sleep(_STEP_S)
    outcome.status = "finished"
    _say(outcome.agent_id, "finished its task")


async def _looping_agent(monitor: Monitor, outcome: _Outcome) -> None:
    # The same call three ways: key order and whitespace differ, meaning does not.
    variants = [
        {"query": "refund policy", "limit": 5},
        '{ "limit": 5, "query": "refund policy" }',
        {"limit": 5, "query": "refund policy"},
    ]
    try:
        async with monitor.run(outcome.agent_id) as run:
            outcome.correlation_id = run.correlation_id
            for i in range(1, 11):
                args = variants[(i - 1) % len(variants)]
                run.step("search knowledge base")
                run.tool_call("kb_search", args)
                outcome.tool_calls += 1
                _say(outcome.agent_id, f"step {i}: kb_search({args}) <- same call again")
                await asyncio.sleep(_STEP_S)  # a kill cancels this await at once
        outcome.status = "finished (never killed!)"
    except AgentKilled as exc:
        outcome.status = "killed"
        outcome.kill_latency_ms = run.kill_latency_ms
        _say(outcome.agent_id, f"KILLED after {outcome.tool_calls} calls: {exc}")


_EXPECTED_DETECTORS = frozenset({"reasoning_loop", "token_growth"})


async def _watch_anomalies(
    bootstrap: str, seen: list[dict[str, object]], all_seen: asyncio.Event, stop: asyncio.Event
) -> None:
    consumer = AIOKafkaConsumer(
        ANOMALIES, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    _, anomaly = codec.decode(record.value, expect="trc.Anomaly")
                    seen.append(anomaly)
                    if {a["detector"] for a in seen} >= _EXPECTED_DETECTORS:
                        all_seen.set()
                    _say(
                        "detector",
                        f"ANOMALY {anomaly['detector']} [{anomaly['category']}] on "
                        f"{anomaly['agent_id']}: {anomaly['detail']} "
                        f"(detected {anomaly['detection_latency_ms']:.1f} ms after the event)",
                    )
    finally:
        await consumer.stop()


async def _fleet(
    monitor: Monitor, bootstrap: str
) -> tuple[list[_Outcome], list[dict[str, object]]]:
    suffix = uuid.uuid4().hex[:6]
    sync_agent = _Outcome(f"weather-{suffix}")
    async_agent = _Outcome(f"researcher-{suffix}")
    hungry = _Outcome(f"summariser-{suffix}")
    looper = _Outcome(f"support-bot-{suffix}")
    anomalies: list[dict[str, object]] = []
    all_seen, stop = asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(_watch_anomalies(bootstrap, anomalies, all_seen, stop))
    thread = threading.Thread(target=_healthy_sync_agent, args=(monitor, sync_agent))
    thread.start()
    await asyncio.gather(
        _healthy_async_agent(monitor, async_agent),
        _token_hungry_agent(monitor, hungry),
        _looping_agent(monitor, looper),
    )
    await asyncio.to_thread(thread.join)
    monitor.flush()
    with contextlib.suppress(TimeoutError):  # reported as a failure by the summary
        await asyncio.wait_for(all_seen.wait(), 5)
    stop.set()
    await watcher
    return [sync_agent, async_agent, hungry, looper], anomalies


def run_demo(port: int = 19092, web_port: int = 16066, keep_running: bool = False) -> int:
    """Run the demo; returns the process exit code.

    With ``keep_running`` the broker and worker stay up after the summary, for
    the dashboard and the CLI, until Ctrl-C or SIGTERM.
    """
    workdir = Path(tempfile.mkdtemp(prefix="trc-demo-"))
    print(f"Total Runtime Control demo (logs in {workdir})")
    stop = threading.Event()
    # Handlers first: Ctrl-C or SIGTERM at any point must still stop what was started.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    broker = EmbeddedBroker(port, log_path=workdir / "broker.log")
    try:
        broker.start()
    except BrokerStartError as exc:
        print(f"error: embedded broker did not start: {exc}", file=sys.stderr)
        return 1
    _say("broker", f"embedded Tansu broker ready on {broker.bootstrap_servers}")
    env = {
        "TRC_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "TRC_APP_ID": f"trc-demo-{uuid.uuid4().hex[:6]}",
        "TRC_WEB_PORT": str(web_port),
        "TRC_DATA_DIR": str(workdir / "data"),
    }
    worker = WorkerProcess(env, workdir / "worker.log")
    try:
        worker.start()
        _say("worker", f"detection worker ready (pid {worker.pid}, dashboard {worker.url('/')})")
        settings = load_settings(
            bootstrap_servers=broker.bootstrap_servers, journal_dir=workdir / "journal"
        )
        with Monitor(settings) as monitor:
            outcomes, anomalies = asyncio.run(_fleet(monitor, broker.bootstrap_servers))
        code = _summarise(outcomes, anomalies)
        if keep_running:
            _linger(broker.bootstrap_servers, web_port, outcomes, stop)
        return code
    except WorkerStartError as exc:
        print(f"error: detection worker did not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        worker.stop()
        broker.stop()


def _linger(
    bootstrap_servers: str, web_port: int, outcomes: list[_Outcome], stop: threading.Event
) -> None:
    env = f"TRC_BOOTSTRAP_SERVERS={bootstrap_servers} TRC_WEB_PORT={web_port}"
    looper = outcomes[-1]
    print(
        "\nThe broker and the worker keep running; Ctrl-C stops them. Try:\n"
        f"  dashboard  http://127.0.0.1:{web_port}/\n"
        f"  {env} trc agents\n"
        f"  {env} trc trace {looper.correlation_id}\n"
        f"  {env} trc audit\n"
        f"  {env} trc tail --from-beginning --type anomaly",
        flush=True,
    )
    while not stop.wait(0.5):
        pass


def _summarise(outcomes: list[_Outcome], anomalies: list[dict[str, object]]) -> int:
    print("\nSummary")
    for o in outcomes:
        latency = (
            f", kill landed {o.kill_latency_ms:.1f} ms after it was issued"
            if o.kill_latency_ms
            else ""
        )
        print(f"  {o.agent_id:<20} {o.status:<10} {o.tool_calls} steps{latency}")
    detection = [float(a["detection_latency_ms"]) for a in anomalies]  # type: ignore[arg-type]
    if detection:
        median = statistics.median(detection)
        print(f"  detection latency (event emitted -> decision published): median {median:.1f} ms")
    healthy, looper = outcomes[:3], outcomes[3]
    failures = []
    if looper.status != "killed":
        failures.append(f"the looping agent was not killed (status {looper.status})")
    elif looper.tool_calls >= 4:
        failures.append(f"the looping agent made {looper.tool_calls} calls before the kill")
    failures += [
        f"{o.agent_id} did not finish ({o.status})" for o in healthy if o.status != "finished"
    ]
    detectors = {str(a["detector"]) for a in anomalies}
    for expected in sorted(_EXPECTED_DETECTORS):
        if expected not in detectors:
            failures.append(f"no {expected} anomaly reached trc.anomalies")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if not failures:
        print("OK: the runaway agent was killed before its 4th call; the healthy agents finished.")
    return 1 if failures else 0
