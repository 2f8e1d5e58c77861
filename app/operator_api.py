"""The operator surface of a worker: fleet and trace stores, the live stream, the web views.

The worker calls :meth:`OperatorSurface.observe` for every event of the
re-keyed stream (keyed by correlation id), :meth:`OperatorSurface.commit`
after every batch, and :meth:`OperatorSurface.on_anomaly` for every finding it
publishes. Three changelog-backed tables hold the state, all written from the
stream keyed by correlation id, so a chain's records live in that chain's
partition and a restarted worker recovers them:

* ``<app_id>-fleet-tasks``: task id -> :class:`app.fleet.TaskView`;
* ``<app_id>-trace-heads``: correlation id -> :class:`app.trace.TraceHead`;
* ``<app_id>-trace-chunks``: ``<correlation id>#<n>`` -> up to 100 compact steps.

Bounds: ``TRC_TRACE_MAX_EVENTS`` per chain (the oldest chunks go first), and
chains and tasks idle for ``TRC_TRACE_RETENTION_S`` are deleted by a sweep that
runs in the stream (tables can only be written there).

Web views (JSON unless said otherwise):

=============================  ==============================================
``/``                          the live dashboard (``app/dashboard/``)
``/dashboard/{name}``          its script and stylesheet
``/api/fleet``                 one row per agent
``/api/tasks``                 tasks; ``?agent=&chain=&state=&limit=``
``/api/trace/{correlation}``   the causal tree of a chain, root cause marked
``/api/status``                what this worker holds and serves
``/api/stream``                server-sent events: ``fleet``, ``agent``,
                               ``event``, ``anomaly``; ``?agent=&task=&chain=``
=============================  ==============================================

One worker serves what its partitions hold; with several workers, ask each
(or run the dashboard against one worker per deployment).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
from collections import deque
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import faust
from aiohttp import web
from faust.web import Request, Response, View

from agents_bridge.clock import now_us
from agents_bridge.settings import Settings
from app.fleet import AgentRow, TaskView, agent_rows, apply_event, task_state
from app.state_table import JsonTable, dump_model, model_loader
from app.trace import (
    TraceHead,
    add_finding,
    append_step,
    build_trace,
    chunk_key,
    chunk_keys,
    compact,
    expired,
)

__all__ = ["OperatorSurface", "select_expired"]

US = 1_000_000

_log = logging.getLogger(__name__)

_SWEEP_EVERY_S = 30.0
_SUBSCRIBER_QUEUE = 2000
"""Messages a slow browser may lag behind before it misses some (counted, never blocking)."""
_FLEET_PUSH_EVERY_S = 2.0
"""A fleet snapshot this often: silence and tokens per minute change without events."""
_KEEPALIVE_S = 15.0
_PEER_TIMEOUT = aiohttp.ClientTimeout(total=3)
_RELAY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=3)
_RECENT_ANOMALIES = 100
"""Findings a newly opened dashboard is shown at once (this worker's, since it started)."""
_DASHBOARD = Path(__file__).resolve().parent / "dashboard"
_STATIC = {"app.js": "application/javascript", "app.css": "text/css"}


def _recency(row: dict[str, Any]) -> tuple[bool, int]:
    return row["state"] in ("running", "paused", "silent"), int(row["last_event_at"])


def select_expired(
    heads: Iterable[tuple[str, TraceHead]],
    tasks: Iterable[tuple[str, TaskView]],
    now: int,
    partition: int,
    retention_s: float,
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """What a sweep deletes: (chain keys, chunk keys, (task key, agent id)) idle past retention.

    Only records of ``partition``, the one being processed: a deletion is a changelog
    tombstone, and it must land in the partition that holds the record.
    """
    chains: list[str] = []
    chunks: list[str] = []
    for key, head in heads:
        if head.partition == partition and expired(head, now, retention_s):
            chains.append(key)
            chunks += chunk_keys(head)
    gone = [
        (key, view.agent_id)
        for key, view in tasks
        if view.partition == partition and now - view.last_event_at > retention_s * US
    ]
    return chains, chunks, gone


V = TypeVar("V")


def _dump_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _load_steps(raw: Any) -> list[dict[str, Any]]:
    # JSON as written, or the list Faust's codec parsed when recovering the changelog.
    return list(json.loads(raw) if isinstance(raw, bytes | str) else raw)


class _Subscriber:
    def __init__(self, agent: str | None, task: str | None, chain: str | None) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any] | list[Any]]] = asyncio.Queue(
            _SUBSCRIBER_QUEUE
        )
        self.agent, self.task, self.chain = agent, task, chain
        self.missed = 0

    def wants(self, agent: str | None, task: str | None, chain: str | None) -> bool:
        return (
            (self.agent is None or agent == self.agent)
            and (self.task is None or task == self.task)
            and (self.chain is None or chain == self.chain)
        )

    def put(self, kind: str, data: dict[str, Any] | list[Any]) -> None:
        try:
            self.queue.put_nowait((kind, data))
        except asyncio.QueueFull:
            self.missed += 1  # never block the stream for a slow browser


class OperatorSurface:
    """Fleet and trace state of one worker, the live stream and the operator's web views."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        prefix, partitions = settings.app_id, settings.partitions
        self.settings = settings
        self._app = app
        self._source_topic = f"{prefix}-events-by-chain"
        flush_s = settings.table_flush_interval_ms / 1000
        self.tasks = JsonTable(
            app,
            f"{prefix}-fleet-tasks",
            partitions,
            model_loader(TaskView),
            dump_model,
            20_000,
            flush_s,
        )
        self.heads = JsonTable(
            app,
            f"{prefix}-trace-heads",
            partitions,
            model_loader(TraceHead),
            dump_model,
            20_000,
            flush_s,
        )
        self.chunks = JsonTable(
            app, f"{prefix}-trace-chunks", partitions, _load_steps, _dump_json, 20_000, flush_s
        )
        self._subscribers: set[_Subscriber] = set()
        self._dirty_agents: set[str] = set()
        self._agent_tasks: dict[str, set[str]] = {}
        """agent id -> its task ids; rebuilt from the table after a rebalance or restart."""
        self._index_complete = False
        self._pushed: dict[str, dict[str, Any]] = {}
        self._recent_anomalies: deque[dict[str, Any]] = deque(maxlen=_RECENT_ANOMALIES)
        self._last_sweep = time.monotonic()
        self.started_at = time.time()
        self.events_observed = 0

    # -- the stream's side ----------------------------------------------------------------

    @staticmethod
    def _partition() -> int:
        event = faust.current_event()
        return int(event.message.partition) if event is not None else -1

    def _in_chain_stream(self) -> bool:
        event = faust.current_event()
        return event is not None and event.message.topic == self._source_topic

    def observe(self, event: dict[str, Any]) -> None:
        """Fold one event of the re-keyed stream into the fleet and trace stores."""
        try:
            self._observe(event)
        except Exception:  # the operator's view must never cost the detectors an event
            _log.exception("operator view: event %s not recorded", event.get("event_id"))

    def _observe(self, event: dict[str, Any]) -> None:
        self.events_observed += 1
        partition = self._partition()
        task_id = event["task_id"]
        view = apply_event(self.tasks.get(task_id), event, partition)
        self.tasks.stage(task_id, view)
        self._agent_tasks.setdefault(view.agent_id, set()).add(task_id)
        step = compact(event)
        if step is not None:
            self._append(event["correlation_id"], step, partition)
        if self._subscribers:
            self._dirty_agents.add(view.agent_id)
            if step is not None:
                message = {**step, "chain": event["correlation_id"]}
                for subscriber in self._subscribers:
                    if subscriber.wants(step["agent"], step["task"], message["chain"]):
                        subscriber.put("event", message)

    def _append(self, correlation_id: str, step: dict[str, Any], partition: int) -> None:
        head = self.heads.get(correlation_id)
        open_steps: list[dict[str, Any]] = []
        if head is not None and head.open_size:
            open_steps = self.chunks.get(chunk_key(correlation_id, head.open_chunk)) or []
        head, steps, chunk, evicted = append_step(
            head,
            open_steps,
            step,
            correlation_id=correlation_id,
            max_events=self.settings.trace_max_events,
            partition=partition,
        )
        self.heads.stage(correlation_id, head)
        self.chunks.stage(chunk_key(correlation_id, chunk), steps)
        for number in evicted:
            self.chunks.delete(chunk_key(correlation_id, number))

    def on_anomaly(self, record: dict[str, Any]) -> None:
        """A finding the worker published: to the live stream, and into its chain's trace."""
        try:
            self._on_anomaly(record)
        except Exception:
            _log.exception("operator view: anomaly %s not recorded", record.get("anomaly_id"))

    def _on_anomaly(self, record: dict[str, Any]) -> None:
        finding = {
            "anomaly_id": record["anomaly_id"],
            "detector": record["detector"],
            "level": record.get("level", "breach"),
            "category": record.get("category"),
            "detail": record.get("detail", ""),
            "agent_id": record["agent_id"],
            "task_id": record["task_id"],
            "evidence": list(record.get("evidence_event_ids") or ()),
            "at": record["detected_at"],
            "command_id": record.get("command_id"),
        }
        # Only the chain's own stream may write the chain's records (their partition);
        # findings from the per-agent stream or the silence timer go to the live stream only.
        head = self.heads.get(record["correlation_id"]) if self._in_chain_stream() else None
        if head is not None and finding["level"] != "signal":
            self.heads.stage(record["correlation_id"], add_finding(head, finding))
        message = {**record, "chain": record["correlation_id"]}
        self._recent_anomalies.append(message)
        for subscriber in self._subscribers:
            if subscriber.wants(record["agent_id"], record["task_id"], record["correlation_id"]):
                subscriber.put("anomaly", message)
        if record["detector"] == "silent_agent":
            self._dirty_agents.add(record["agent_id"])
            self._push_agents()

    def commit(self) -> None:
        """After each batch of the stream: stage writes behind, push changed agents, sweep."""
        try:
            self._commit()
        except Exception:  # never stop the detection stream
            _log.exception("operator view: commit failed")

    def _commit(self) -> None:
        for table in (self.tasks, self.heads, self.chunks):
            table.commit()
        self._push_agents()
        if time.monotonic() - self._last_sweep >= _SWEEP_EVERY_S:
            self._last_sweep = time.monotonic()
            self._sweep(self._partition())

    def _sweep(self, partition: int) -> None:
        """Delete chains and tasks idle past the retention, of the partition being processed."""
        chains, chunks, tasks = select_expired(
            self.heads.items(),
            self.tasks.items(),
            now_us(),
            partition,
            self.settings.trace_retention_s,
        )
        for key in chains:
            self.heads.delete(key)
        for key in chunks:
            self.chunks.delete(key)
        for key, agent_id in tasks:
            self.tasks.delete(key)
            remaining = self._agent_tasks.get(agent_id, set())
            remaining.discard(key)
            if not remaining:  # the agent left the fleet view: forget what was pushed for it
                self._agent_tasks.pop(agent_id, None)
                self._pushed.pop(agent_id, None)
        for table in (self.tasks, self.heads, self.chunks):
            table.commit()
        if chains or tasks:
            _log.info(
                "retention: %d chain(s), %d task(s) of partition %d deleted",
                len(chains),
                len(tasks),
                partition,
            )

    def forget(self, assigned: Collection[tuple[str, int]]) -> None:
        """After a rebalance the tables are the truth (``assigned``: what this worker holds)."""
        for table in (self.tasks, self.heads, self.chunks):
            table.forget(assigned)
        self._agent_tasks.clear()
        self._index_complete = False

    # -- reads ------------------------------------------------------------------------------

    def task_views(self) -> list[TaskView]:
        return [view for _, view in self.tasks.items()]

    def fleet(self, now: int | None = None) -> list[AgentRow]:
        return agent_rows(self.task_views(), now or now_us())

    async def fleet_rows(self, local: bool) -> list[dict[str, Any]]:
        """This worker's rows, merged with the peers' unless ``local``.

        An agent seen by two workers (tasks in chains of different partitions) is shown
        by its live or most recent row.
        """
        rows = {row.agent_id: row.model_dump(mode="json") for row in self.fleet()}
        if not local:
            for answer in await self.ask_peers("/api/fleet"):
                for row in answer.get("agents", ()):
                    mine = rows.get(row["agent_id"])
                    if mine is None or _recency(row) > _recency(mine):
                        rows[row["agent_id"]] = row
        return [rows[agent_id] for agent_id in sorted(rows)]

    def agent_row(self, agent_id: str, now: int) -> AgentRow | None:
        if not self._index_complete:  # tasks recovered from the changelog are not indexed yet
            self._index_complete = True
            for key, task in self.tasks.items():
                self._agent_tasks.setdefault(task.agent_id, set()).add(key)
        task_ids = self._agent_tasks.get(agent_id) or set()
        views = [view for t in task_ids if (view := self.tasks.get(t)) is not None]
        rows = agent_rows(views, now)
        return rows[0] if rows else None

    def task_list(
        self, agent: str | None, chain: str | None, state: str | None, limit: int
    ) -> list[dict[str, Any]]:
        now = now_us()
        rows = []
        for view in self.task_views():
            current = task_state(view, now)
            if agent and view.agent_id != agent:
                continue
            if chain and view.correlation_id != chain:
                continue
            if state and current != state:
                continue
            row = view.model_dump(mode="json", exclude={"token_buckets", "partition"})
            row["state"] = current
            rows.append(row)
        rows.sort(key=lambda r: r["started_at"] or r["last_event_at"], reverse=True)
        return rows[:limit]

    def holds(self, target_type: str, target_id: str) -> bool:
        """Whether this worker's partitions hold the task or the chain."""
        if target_type == "task":
            return self.tasks.get(target_id) is not None
        return target_type == "chain" and self.heads.get(target_id) is not None

    def trace(self, correlation_id: str) -> dict[str, Any] | None:
        head = self.heads.get(correlation_id)
        if head is None:
            return None
        steps: list[dict[str, Any]] = []
        for number in range(head.first_chunk, head.open_chunk + 1):
            steps.extend(self.chunks.get(chunk_key(correlation_id, number)) or ())
        return build_trace(correlation_id, steps, findings=head.findings, dropped=head.dropped)

    def status(self) -> dict[str, Any]:
        rows = self.fleet()
        states: dict[str, int] = {}
        for row in rows:
            states[row.state] = states.get(row.state, 0) + 1
        return {
            "app_id": self.settings.app_id,
            "bootstrap_servers": self.settings.bootstrap_servers,
            "uptime_s": round(time.time() - self.started_at, 1),
            "events_observed": self.events_observed,
            "agents": len(rows),
            "agent_states": states,
            "tasks": sum(row.tasks for row in rows),
            "chains": sum(1 for _ in self.heads.items()),
            "stream_subscribers": len(self._subscribers),
            "trace_retention_s": self.settings.trace_retention_s,
            "trace_max_events": self.settings.trace_max_events,
        }

    # -- the live stream -------------------------------------------------------------------

    def _push_agents(self) -> None:
        if not self._dirty_agents:
            return
        dirty, self._dirty_agents = self._dirty_agents, set()
        if not self._subscribers:
            return
        now = now_us()
        for agent_id in dirty:
            row = self.agent_row(agent_id, now)
            if row is None:
                continue
            data = row.model_dump(mode="json")
            if self._pushed.get(agent_id) == data:
                continue
            self._pushed[agent_id] = data
            for subscriber in self._subscribers:
                if subscriber.wants(agent_id, None, None):
                    subscriber.put("agent", data)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        subscriber = _Subscriber(query.get("agent"), query.get("task"), query.get("chain"))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self._subscribers.add(subscriber)
        local = "local" in query
        relays = (
            []
            if local
            else [asyncio.ensure_future(self._relay(peer, subscriber)) for peer in self.peers()]
        )
        try:
            await self._send(response, "hello", {"app_id": self.settings.app_id})
            for anomaly in list(self._recent_anomalies):
                if subscriber.wants(anomaly["agent_id"], anomaly["task_id"], anomaly["chain"]):
                    await self._send(response, "anomaly", anomaly)
            next_fleet = 0.0
            while True:
                if time.monotonic() >= next_fleet:
                    next_fleet = time.monotonic() + _FLEET_PUSH_EVERY_S
                    rows = [
                        r
                        for r in (await self.fleet_rows(local))
                        if subscriber.wants(r["agent_id"], None, None)
                    ]
                    await self._send(response, "fleet", rows)
                try:
                    kind, data = await asyncio.wait_for(
                        subscriber.queue.get(),
                        timeout=min(_KEEPALIVE_S, max(0.05, next_fleet - time.monotonic())),
                    )
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                await self._send(response, kind, data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the browser went away
        finally:
            self._subscribers.discard(subscriber)
            for relay in relays:
                relay.cancel()
        return response

    @staticmethod
    async def _send(
        response: web.StreamResponse, kind: str, data: dict[str, Any] | list[Any]
    ) -> None:
        payload = json.dumps(data, separators=(",", ":"))
        await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())

    # -- the other workers of the deployment ---------------------------------------------------

    def peers(self) -> list[str]:
        """Web URLs of the deployment's other workers (from the group's partition assignment)."""
        try:
            hosts = self._app.assignor.tables_metadata().keys()
            me = str(self._app.conf.canonical_url).rstrip("/")
        except Exception:  # not assigned yet
            return []
        return sorted({str(h).rstrip("/") for h in hosts} - {me})

    async def ask_peers(self, path: str) -> list[Any]:
        """``GET path?local=1`` on every peer; the answers that came (a silent peer is logged)."""

        async def ask(peer: str) -> Any:
            url = f"{peer}{path}{'&' if '?' in path else '?'}local=1"
            try:
                async with self._app.http_client.get(url, timeout=_PEER_TIMEOUT) as response:
                    if response.status == 200:
                        return await response.json()
                    return None
            except Exception as exc:  # a peer that went away must not fail the answer
                _log.warning("peer %s did not answer %s: %s", peer, path, exc)
                return None

        answers = await asyncio.gather(*(ask(peer) for peer in self.peers()))
        return [a for a in answers if a is not None]

    async def _relay(self, peer: str, subscriber: _Subscriber) -> None:
        """Forward a peer's live events and anomalies to one local subscriber."""
        query = "&".join(
            f"{name}={value}"
            for name, value in (
                ("agent", subscriber.agent),
                ("task", subscriber.task),
                ("chain", subscriber.chain),
            )
            if value
        )
        url = f"{peer}/api/stream?local=1{'&' + query if query else ''}"
        try:
            async with self._app.http_client.get(url, timeout=_RELAY_TIMEOUT) as response:
                kind = ""
                async for raw in response.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind in ("event", "anomaly", "agent"):
                        subscriber.put(kind, json.loads(line[6:]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.warning("live stream of peer %s ended: %s", peer, exc)

    # -- web views ---------------------------------------------------------------------------

    def dashboard_html(self) -> str:
        page = (_DASHBOARD / "index.html").read_text()
        # Dev mode only: the page gets the API token so one can click without pasting it.
        production = self.settings.production
        dev_token = "" if production else self.settings.api_token.get_secret_value()
        return page.replace("{{DEV_TOKEN}}", html.escape(dev_token, quote=True))

    def register(self, app: faust.App) -> None:
        """Add the dashboard and the operator API to ``app``'s web server."""
        surface = self

        class DashboardView(View):
            async def get(self, request: Request) -> Response:
                return self.html(surface.dashboard_html())

        class StaticView(View):
            async def get(self, request: Request, name: str) -> Response:
                content_type = _STATIC.get(name)
                if content_type is None:
                    return self.json({"error": f"no such file: {name}"}, status=404)
                body = (_DASHBOARD / name).read_bytes()
                return self.bytes(body, content_type=content_type)

        class FleetView(View):
            async def get(self, request: Request) -> Response:
                rows = await surface.fleet_rows("local" in request.query)
                return self.json({"agents": rows, "time": now_us()})

        class TasksView(View):
            async def get(self, request: Request) -> Response:
                query = request.query
                try:
                    limit = int(query.get("limit", "500"))
                except ValueError:
                    return self.json({"error": "limit must be an integer"}, status=400)
                rows = surface.task_list(
                    query.get("agent"), query.get("chain"), query.get("state"), limit
                )
                if "local" not in query:
                    params = "&".join(
                        f"{k}={v}" for k in ("agent", "chain", "state") if (v := query.get(k))
                    )
                    for answer in await surface.ask_peers(f"/api/tasks?limit={limit}&{params}"):
                        rows += answer.get("tasks", [])
                    rows.sort(key=lambda r: r["started_at"] or r["last_event_at"], reverse=True)
                return self.json({"tasks": rows[:limit], "time": now_us()})

        class TraceView(View):
            async def get(self, request: Request, correlation_id: str) -> Response:
                trace = surface.trace(correlation_id)
                if trace is None and "local" not in request.query:
                    # The chain lives on the worker that owns its partition: ask the others.
                    path = f"/api/trace/{quote(correlation_id, safe='')}"
                    trace = next(iter(await surface.ask_peers(path)), None)
                if trace is None:
                    return self.json(
                        {"error": f"no chain {correlation_id!r} on this worker"}, status=404
                    )
                return self.json(trace)

        class StatusView(View):
            async def get(self, request: Request) -> Response:
                return self.json({**surface.status(), "peers": surface.peers()})

        class StreamView(View):
            async def get(self, request: Request) -> Any:
                return await surface._stream(request)  # type: ignore[arg-type]

        app.page("/")(DashboardView)
        app.page("/dashboard/{name}")(StaticView)
        app.page("/api/fleet")(FleetView)
        app.page("/api/tasks")(TasksView)
        app.page("/api/trace/{correlation_id}")(TraceView)
        app.page("/api/status")(StatusView)
        app.page("/api/stream")(StreamView)
