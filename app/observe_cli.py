"""``trc agents | tasks | tail | trace | status | export | journal replay``: the operator's CLI.

In the manner of kubectl and kcat: tables by default, ``-o json`` for scripts.
``agents``, ``tasks``, ``trace`` and ``status`` ask a worker's HTTP API
(``--server``, default ``http://TRC_WEB_HOST:TRC_WEB_PORT``); ``tail`` and
``export`` read the broker directly (``TRC_BOOTSTRAP_SERVERS`` or
``--bootstrap-servers``); ``journal replay`` sends an agent host's spill journal.

Exit codes: 0 ok; 1 not found or no data; 2 usage error; 3 the service or the
broker does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "add_commands",
    "server_url",
    "table",
]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_UNREACHABLE = 3

_HTTP_TIMEOUT_S = 5.0


class Unreachable(Exception):
    """The worker or the broker did not answer; the message says which and how to fix it."""


class NotFound(Exception):
    """The worker answered that the thing asked for does not exist."""


# -- HTTP -------------------------------------------------------------------------------------


def server_url(args: argparse.Namespace) -> str:
    """The worker's URL: ``--server``, else the one the settings name."""
    if args.server:
        return str(args.server).rstrip("/")
    from agents_bridge.settings import load_settings

    settings = load_settings()
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::") else settings.web_host
    return f"http://{host}:{settings.web_port}"


def get_json(server: str, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET ``server + path`` as JSON; :class:`Unreachable` or :class:`NotFound` on failure."""
    query = {k: v for k, v in (params or {}).items() if v is not None}
    url = server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        if exc.code == 404:
            raise NotFound(str(message)) from None
        raise Unreachable(f"{url} answered {exc.code}: {message}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(
            f"the TRC service at {server} does not answer ({reason}); "
            "is `trc worker` running? point at it with --server or TRC_WEB_HOST/TRC_WEB_PORT"
        ) from None


# -- rendering --------------------------------------------------------------------------------


def _ago(us: int | None, now_us: int) -> str:
    if not us:
        return "-"
    s = max(0.0, (now_us - us) / 1e6)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> None:
    """A kubectl-style table: upper-case headers, columns padded to their widest cell."""
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _clock(us: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(us / 1e6)) + f".{us // 1000 % 1000:03d}"


def render_trace(trace: dict[str, Any], out: TextIO) -> None:
    """The causal tree: tasks by parent links, their steps with timings, tokens and status."""
    start = trace["started_at"] or 0
    out.write(
        f"chain {trace['correlation_id']}: {trace['events']} events, {trace['tasks']} tasks, "
        f"{len(trace['agents'])} agents, {trace['duration_ms']:.1f} ms, "
        f"{trace['tokens']} tokens, ${trace['cost_usd']:.4f}\n"
    )
    if trace.get("dropped_events"):
        out.write(f"  ({trace['dropped_events']} oldest events dropped by the per-chain cap)\n")
    cause = trace.get("root_cause")
    if cause:
        out.write(
            f"ROOT CAUSE: {cause['agent_id']} task {cause['task_id']} step {cause['step']} "
            f"at +{(cause['at'] - start) / 1e6:.3f}s: {cause['what']}\n"
        )
    else:
        out.write("no failure in this chain\n")
    for finding in trace.get("findings") or ():
        out.write(
            f"finding: {finding.get('detector')} ({finding.get('level')}) on "
            f"{finding.get('agent_id')}: {finding.get('detail')}\n"
        )
    out.write("\n")

    def task_line(node: dict[str, Any]) -> str:
        mark = "  <- ROOT CAUSE" if node["root_cause"] else ""
        error = f" {node['error']}" if node.get("error") else ""
        return (
            f"{node['agent_id']} task {node['task_id']}  [{node['status']}{error}]  "
            f"+{(node['started_at'] - start) / 1e6:.3f}s  {node['duration_ms']:.1f} ms  "
            f"{node['tokens']} tok  ${node['cost_usd']:.4f}{mark}"
        )

    def step_line(step: dict[str, Any]) -> str:
        what = " ".join(
            x for x in [step["action"] or "", *(f"{t}()" for t in step["tools"])] if x
        ) or " ".join(dict.fromkeys(e["type"] for e in step["events"]))
        errors = f"  {'; '.join(step['errors'])}" if step["errors"] else ""
        mark = "  <- ROOT CAUSE" if step["root_cause"] else ""
        return (
            f"#{step['step']} {what}  +{(step['started_at'] - start) / 1e6:.3f}s  "
            f"{step['duration_ms']:.1f} ms  {step['tokens']} tok  {step['status']}{errors}{mark}"
        )

    def walk(node: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        out.write(prefix + branch + task_line(node) + "\n")
        inner = prefix + ("" if top else ("   " if last else "│  "))
        items: list[tuple[str, Any]] = [("step", s) for s in node["steps"]]
        items += [("task", c) for c in node["children"]]
        for i, (kind, item) in enumerate(items):
            is_last = i == len(items) - 1
            if kind == "step":
                out.write(inner + ("└─ " if is_last else "├─ ") + step_line(item) + "\n")
            else:
                walk(item, inner, is_last, False)

    for root in trace["roots"]:
        walk(root, "", True, True)


# -- subcommands ------------------------------------------------------------------------------


def _emit_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2)
    out.write("\n")


def _listing(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    out: TextIO,
    noun: str,
    headers: list[str],
    cells: Callable[[dict[str, Any]], list[Any]],
) -> int:
    """``rows`` as JSON or a table; EXIT_NOT_FOUND (and a note) when there are none."""
    if args.output == "json":
        _emit_json(rows, out)
    elif rows:
        table(headers, (cells(r) for r in rows), out)
    if not rows:
        print(f"No {noun} found.", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK


def _agents(args: argparse.Namespace, out: TextIO) -> int:
    data = get_json(server_url(args), "/api/fleet")
    rows = [r for r in data["agents"] if not args.state or r["state"] == args.state]
    now = data["time"]
    return _listing(
        rows,
        args,
        out,
        "agents",
        ["AGENT", "TYPE", "STATE", "STEP", "TOKENS/MIN", "COST", "HEARTBEAT", "TASK", "CHAIN"],
        lambda r: [
            r["agent_id"],
            r["agent_type"],
            r["state"],
            f"#{r['step_index']} {r['current_step'] or ''}".strip(),
            r["tokens_per_minute"],
            f"${r['cost_usd']:.4f}",
            _ago(r["last_heartbeat_at"], now),
            r["task_id"],
            r["correlation_id"],
        ],
    )


def _tasks(args: argparse.Namespace, out: TextIO) -> int:
    params = {"agent": args.agent, "chain": args.chain, "state": args.state, "limit": args.limit}
    data = get_json(server_url(args), "/api/tasks", params)
    rows = data["tasks"]
    now = data["time"]
    return _listing(
        rows,
        args,
        out,
        "tasks",
        ["TASK", "AGENT", "STATE", "STATUS", "STEPS", "TOKENS", "COST", "AGE", "CHAIN"],
        lambda r: [
            r["task_id"],
            r["agent_id"],
            r["state"],
            r["status"],
            r["step_index"],
            r["tokens"],
            f"${r['cost_usd']:.4f}",
            _ago(r["started_at"] or r["last_event_at"], now),
            r["correlation_id"],
        ],
    )


def _trace(args: argparse.Namespace, out: TextIO) -> int:
    path = "/api/trace/" + urllib.parse.quote(args.correlation_id, safe="")
    try:
        trace = get_json(server_url(args), path)
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.output == "json":
        _emit_json(trace, out)
    else:
        render_trace(trace, out)
    return EXIT_OK


def _status(args: argparse.Namespace, out: TextIO) -> int:
    server = server_url(args)
    status = get_json(server, "/api/status")
    try:
        ready = bool(get_json(server, "/readyz").get("ready"))
    except Unreachable:  # /readyz answers 503 while the worker joins its group
        ready = False
    status = {"server": server, "ready": ready, **status}
    if args.output == "json":
        _emit_json(status, out)
    else:
        states = ", ".join(f"{n} {s}" for s, n in sorted(status["agent_states"].items()))
        table(
            ["FIELD", "VALUE"],
            [
                ["server", server],
                ["ready", "yes" if ready else "no (joining its consumer group)"],
                ["app id", status["app_id"]],
                ["broker", status["bootstrap_servers"]],
                ["uptime", f"{status['uptime_s']:.0f} s"],
                ["events observed", status["events_observed"]],
                ["agents", f"{status['agents']} ({states})" if states else 0],
                ["tasks", status["tasks"]],
                ["chains kept", status["chains"]],
                ["live dashboards", status["stream_subscribers"]],
                ["dashboard", f"{server}/"],
            ],
            out,
        )
    return EXIT_OK if ready else EXIT_NOT_FOUND


# -- the broker side: tail and export ---------------------------------------------------------


def _bootstrap(args: argparse.Namespace) -> str:
    if args.bootstrap_servers:
        return str(args.bootstrap_servers)
    from agents_bridge.settings import load_settings

    return load_settings().bootstrap_servers


def _security() -> dict[str, Any]:
    """TLS and SASL options for aiokafka clients, from the TRC_* settings."""
    from agents_bridge.settings import load_settings

    return load_settings().kafka_security()


def matches(record: dict[str, Any], kind: str, args: argparse.Namespace) -> bool:
    """The tail's filters: agent, task, chain, and type (an event type or an anomaly's detector)."""
    kinds = set(args.type or ())
    type_name = record.get("event_type") if kind == "event" else record.get("detector")
    return (
        (not args.agent or record.get("agent_id") in args.agent)
        and (not args.task or record.get("task_id") in args.task)
        and (not args.chain or record.get("correlation_id") in args.chain)
        and (not kinds or type_name in kinds or kind in kinds)
    )


def tail_line(kind: str, record: dict[str, Any]) -> str:
    """One human line per record, kcat-like."""
    if kind == "anomaly":
        command = f" -> command {record['command_id']}" if record.get("command_id") else ""
        return (
            f"{_clock(record['detected_at'])}  ANOMALY  {record['detector']} "
            f"[{record.get('level', 'breach')}/{record['category']}] {record['agent_id']} "
            f"task {record['task_id']}: {record['detail']}{command}"
        )
    what = [
        record.get("action"),
        record.get("tool_name") and f"{record['tool_name']}()",
        record.get("tool_stage"),
        record.get("error_type"),
    ]
    tokens = (record.get("prompt_tokens") or 0) + (record.get("completion_tokens") or 0)
    extra = f" {tokens} tok" if tokens else ""
    status = "" if record.get("status", "ok") == "ok" else f" [{record['status']}]"
    return (
        f"{_clock(record['emitted_at'])}  {record['agent_id']}  #{record.get('step_index', 0)} "
        f"{record['event_type']} {' '.join(w for w in what if w)}".rstrip()
        + f"{extra}{status}  task {record['task_id']} chain {record['correlation_id']}"
    )


async def _tail_async(args: argparse.Namespace, out: TextIO) -> int:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    from agents_bridge.codec import DecodeError, codec
    from agents_bridge.topics import ANOMALIES, EVENTS_PATTERN

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the error below says it once
    bootstrap = _bootstrap(args)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        # New agents' topics are read from their first record; the topics that exist
        # at the start are moved to their end below unless --from-beginning.
        auto_offset_reset="earliest",
        metadata_max_age_ms=1000,  # a new agent's topic is tailed within about a second
        request_timeout_ms=10_000,
        **_security(),
    )
    started_us = time.time_ns() // 1000
    try:
        await asyncio.wait_for(consumer.start(), timeout=15)
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise Unreachable(
            f"the broker at {bootstrap} does not answer ({exc}); "
            "set TRC_BOOTSTRAP_SERVERS or pass --bootstrap-servers"
        ) from None
    events = EVENTS_PATTERN.pattern.strip("^$")
    consumer.subscribe(pattern=f"^({events}|{re.escape(ANOMALIES)})$")
    if not args.from_beginning:
        assigned_by = time.monotonic() + 3
        # aiokafka signals no event for the first assignment (made by a metadata answer).
        while not consumer.assignment() and time.monotonic() < assigned_by:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if consumer.assignment():
            await consumer.seek_to_end(*consumer.assignment())
    # Scripts and tests wait for this line: from here on nothing emitted is missed.
    print(f"tailing trc.events.* and {ANOMALIES} on {bootstrap}", file=sys.stderr, flush=True)
    shown = 0
    stop_at = time.monotonic() + args.timeout if args.timeout else None
    try:
        while stop_at is None or time.monotonic() < stop_at:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                kind = "anomaly" if tp.topic == ANOMALIES else "event"
                expect = "trc.Anomaly" if kind == "anomaly" else "trc.AgentEvent"
                for message in records:
                    try:
                        record = codec.decode(message.value or b"", expect=expect)[1]
                    except DecodeError:
                        continue  # the worker dead-letters what it cannot read
                    stamp = record.get("detected_at") or record.get("emitted_at") or 0
                    if not args.from_beginning and stamp < started_us:
                        continue  # history a topic had before the tail started
                    if not matches(record, kind, args):
                        continue
                    if args.output == "json":
                        out.write(json.dumps({"kind": kind, **record}, default=str) + "\n")
                    else:
                        out.write(tail_line(kind, record) + "\n")
                    out.flush()
                    shown += 1
                    if args.max and shown >= args.max:
                        return EXIT_OK
    finally:
        await consumer.stop()
    return EXIT_OK if shown else EXIT_NOT_FOUND


def _tail(args: argparse.Namespace, out: TextIO) -> int:
    try:
        return asyncio.run(_tail_async(args, out))
    except KeyboardInterrupt:
        return EXIT_OK


def _export(args: argparse.Namespace, out: TextIO) -> int:
    from tqdm import tqdm

    from agents_bridge.settings import load_settings
    from app.recordings import read_topics_with_progress

    bootstrap = _bootstrap(args)
    try:
        events = read_topics_with_progress(
            bootstrap, args.timeout, **load_settings().kafka_security()
        )
    except (OSError, TimeoutError) as exc:
        raise Unreachable(f"the broker at {bootstrap} does not answer ({exc})") from None
    except Exception as exc:
        if type(exc).__module__.startswith("aiokafka"):
            raise Unreachable(f"the broker at {bootstrap} does not answer ({exc})") from None
        raise
    kept = [e for e in events if matches(e, "event", args)]
    target = open(args.out, "w") if args.out else out  # noqa: SIM115 - closed below
    try:
        for event in tqdm(kept, desc="writing", unit=" events", file=sys.stderr):
            target.write(json.dumps(event, default=str) + "\n")
    finally:
        if args.out:
            target.close()
    print(f"{len(kept)} of {len(events)} events exported", file=sys.stderr)
    return EXIT_OK if kept else EXIT_NOT_FOUND


def _count_pending(journal: Any) -> int:
    entries, _ = journal.read(limit=10**9)
    return len(entries)


async def _replay_async(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError
    from tqdm import tqdm

    from agents_bridge.journal import Journal
    from agents_bridge.settings import load_settings

    settings = load_settings()
    directory = args.dir or settings.journal_dir
    if not (directory / "journal.log").exists():
        print(f"error: no journal in {directory}", file=sys.stderr)
        return EXIT_NOT_FOUND
    journal = Journal(directory, settings.journal_max_bytes)
    total = _count_pending(journal)
    if not total:
        print(f"nothing to replay: the journal in {directory} is empty", file=sys.stderr)
        return EXIT_NOT_FOUND
    bootstrap = _bootstrap(args)
    security = settings.kafka_security()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000, **security
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **security)
    try:
        await asyncio.wait_for(asyncio.gather(producer.start(), admin.start()), timeout=15)
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await asyncio.gather(producer.stop(), admin.close())
        raise Unreachable(
            f"the broker at {bootstrap} does not answer ({exc}); the journal is left as it was"
        ) from None
    created: set[str] = set()
    sent = 0
    try:
        with tqdm(
            total=total, desc=f"replaying {directory}", unit=" events", file=sys.stderr
        ) as bar:
            while True:
                entries, position = journal.read(args.batch)
                if not entries:
                    break
                # Brokers may have auto-creation off: the agents' topics come first.
                for topic in {t for t, _, _ in entries} - created:
                    with contextlib.suppress(TopicAlreadyExistsError):
                        await admin.create_topics([NewTopic(topic, 1, settings.replication_factor)])
                    created.add(topic)
                futures = [
                    await producer.send(topic, value, key=key or None)
                    for topic, key, value in entries
                ]
                await asyncio.gather(*futures)
                journal.mark_replayed(position)  # only what the broker acknowledged
                sent += len(entries)
                bar.update(len(entries))
    except KafkaError as exc:
        raise Unreachable(
            f"the broker at {bootstrap} failed during replay ({exc}); {sent} events were "
            "replayed, the rest stay in the journal"
        ) from None
    finally:
        await producer.stop()
        await admin.close()
    print(f"{sent} events replayed to {bootstrap}", file=sys.stderr)
    return EXIT_OK


def _replay(args: argparse.Namespace, out: TextIO) -> int:
    return asyncio.run(_replay_async(args))


# -- registration -----------------------------------------------------------------------------


def _run(
    handler: Callable[[argparse.Namespace, TextIO], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args, sys.stdout)
        except Unreachable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except NotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND

    return run


def add_commands(subparsers: Any) -> None:
    """Register the operator's subcommands into ``trc``'s argparse subparsers."""
    http = argparse.ArgumentParser(add_help=False)
    http.add_argument(
        "--server", help="worker URL (default: http://TRC_WEB_HOST:TRC_WEB_PORT)", default=None
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", choices=["table", "json"], default="table")
    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument("--bootstrap-servers", help="Kafka brokers (default TRC_BOOTSTRAP_SERVERS)")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--agent", action="append", help="only this agent id (repeatable)")
    filters.add_argument("--task", action="append", help="only this task id (repeatable)")
    filters.add_argument("--chain", action="append", help="only this correlation id (repeatable)")
    filters.add_argument(
        "--type",
        action="append",
        help="only this event type or anomaly detector; 'event' or 'anomaly' for a kind",
    )

    agents = subparsers.add_parser(
        "agents", parents=[http, output], help="the fleet: one row per agent"
    )
    agents.add_argument("--state", help="running | paused | killed | finished | silent")
    agents.set_defaults(func=_run(_agents))

    tasks = subparsers.add_parser("tasks", parents=[http, output], help="tasks, newest first")
    tasks.add_argument("--agent")
    tasks.add_argument("--chain", help="correlation id")
    tasks.add_argument("--state")
    tasks.add_argument("--limit", type=int, default=100)
    tasks.set_defaults(func=_run(_tasks))

    trace = subparsers.add_parser(
        "trace",
        parents=[http, output],
        help="the causal chain of a correlation id as a tree, root cause marked",
    )
    trace.add_argument("correlation_id")
    trace.set_defaults(func=_run(_trace))

    status = subparsers.add_parser(
        "status", parents=[http, output], help="is the worker up, and what does it hold"
    )
    status.set_defaults(func=_run(_status))

    tail = subparsers.add_parser(
        "tail",
        parents=[broker, output, filters],
        help="live events and anomalies from the broker (Ctrl-C stops)",
    )
    tail.add_argument("--from-beginning", action="store_true", help="replay what the topics hold")
    tail.add_argument("-n", "--max", type=int, default=0, help="stop after this many records")
    tail.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    tail.set_defaults(func=_run(_tail))

    export = subparsers.add_parser(
        "export",
        parents=[broker, filters],
        help="write recorded events as JSON lines (input for `trc baseline --file`)",
    )
    export.add_argument("--out", type=Path, help="file to write (default: stdout)")
    export.add_argument("--timeout", type=float, default=600, help="give up after this long")
    export.set_defaults(func=_run(_export))

    journal = subparsers.add_parser(
        "journal", help="the agent-side spill journal of this host"
    ).add_subparsers(dest="journal_command", required=True)
    replay = journal.add_parser(
        "replay",
        parents=[broker],
        help="send the journaled events to the broker now (when no agent runs to do it)",
    )
    replay.add_argument("--dir", type=Path, help="journal directory (default TRC_JOURNAL_DIR)")
    replay.add_argument("--batch", type=int, default=1000, help="events per acknowledged batch")
    replay.set_defaults(func=_run(_replay))
