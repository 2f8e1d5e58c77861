"""Incident reconstruction: the causal chain of one correlation id. Pure functions.

The worker keeps, per correlation id, a :class:`TraceHead` and the chain's
events in chunks of :data:`CHUNK_EVENTS` compact steps (a table write per
batch then costs one chunk, not the whole chain). Chains are bounded:
past ``max_events`` the oldest chunk is dropped (counted in ``dropped``), and
chains idle for longer than the retention are deleted.

:func:`build_trace` turns the stored steps into the tree an operator reads:
tasks linked by their parent task ids (the multi-agent task graph), each with
its steps (events grouped by step index) with timings, tokens, cost and
status, and the root cause marked.

Root cause: the earliest failure (an error event or a step with status
error), ties going to the task closest to the root by parent links; a chain
without failures but with a detector breach names the breach's last evidence
event; failing that, the first kill.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CHUNK_EVENTS",
    "MAX_FINDINGS",
    "TraceHead",
    "add_finding",
    "append_step",
    "build_trace",
    "chunk_key",
    "chunk_keys",
    "compact",
    "expired",
]

US = 1_000_000
CHUNK_EVENTS = 20
"""Small: the open chunk is rewritten on every batch that touches the chain. At 100, a
chain growing under load made every small batch rewrite ~50 steps, and the kill latency
behind it climbed past 1 s within a minute (measured, 50 agents at 10 calls/s)."""
MAX_FINDINGS = 50
"""Detector findings remembered per chain (the first ones: they explain the incident)."""

_SKIP = frozenset({"heartbeat"})
_LIFECYCLE = frozenset({"task_start", "task_end"})
"""Liveness, not causality: heartbeats stay out of traces."""


class TraceHead(BaseModel):
    """What the store knows about one chain besides its steps."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    correlation_id: str
    first_chunk: int = 0
    """The oldest chunk still kept."""
    open_chunk: int = 0
    """The chunk being filled."""
    open_size: int = 0
    kept: int = 0
    dropped: int = 0
    first_at: int = 0
    last_at: int = 0
    partition: int = -1
    findings: tuple[dict[str, Any], ...] = ()


def compact(event: dict[str, Any]) -> dict[str, Any] | None:
    """The fields a trace shows, or None for events traces leave out."""
    if event["event_type"] in _SKIP:
        return None
    step: dict[str, Any] = {
        "id": event["event_id"],
        "type": event["event_type"],
        "agent": event["agent_id"],
        "task": event["task_id"],
        "step": int(event.get("step_index") or 0),
        "at": int(event["emitted_at"]),
        "status": event.get("status") or "ok",
    }
    optional = {
        "parent_task": event.get("parent_task_id"),
        "parent_agent": event.get("parent_agent_id"),
        "agent_type": event.get("agent_type"),
        "action": event.get("action"),
        "tool": event.get("tool_name"),
        "stage": event.get("tool_stage"),
        "dur": event.get("duration_ms"),
        "cost": event.get("cost_usd"),
        "error": (
            f"{event.get('error_type') or 'error'}: {event.get('error_message') or ''}".rstrip(": ")
            if event["event_type"] == "error" or event.get("error_type")
            else None
        ),
        "command": event.get("command_id"),
    }
    step.update((k, v) for k, v in optional.items() if v is not None)
    tokens = int(event.get("prompt_tokens") or 0) + int(event.get("completion_tokens") or 0)
    if tokens:
        step["tok"] = tokens
    return step


def append_step(
    head: TraceHead | None,
    open_steps: Sequence[dict[str, Any]],
    step: dict[str, Any],
    *,
    correlation_id: str,
    max_events: int,
    partition: int = -1,
    chunk_events: int = CHUNK_EVENTS,
) -> tuple[TraceHead, list[dict[str, Any]], int, list[int]]:
    """Append ``step`` to the open chunk.

    Returns the new head, the open chunk's steps, the number of the chunk those
    steps belong to (write it) and the numbers of chunks dropped by the cap
    (delete them).
    """
    if head is None:
        head = TraceHead(correlation_id=correlation_id, first_at=step["at"], partition=partition)
    steps = [*open_steps, step]
    chunk = head.open_chunk
    first_chunk, kept, dropped = head.first_chunk, head.kept + 1, head.dropped
    open_chunk, open_size = head.open_chunk, len(steps)
    if open_size >= chunk_events:
        open_chunk, open_size = open_chunk + 1, 0
    evicted: list[int] = []
    # Whole closed chunks go first: the open one holds the newest events.
    while kept > max_events and first_chunk < open_chunk:
        evicted.append(first_chunk)
        kept -= chunk_events
        dropped += chunk_events
        first_chunk += 1
    new_head = head.model_copy(
        update={
            "first_chunk": first_chunk,
            "open_chunk": open_chunk,
            "open_size": open_size,
            "kept": kept,
            "dropped": dropped,
            "first_at": min(head.first_at, step["at"]),
            "last_at": max(head.last_at, step["at"]),
            "partition": partition if partition >= 0 else head.partition,
        }
    )
    return new_head, steps, chunk, evicted


def add_finding(head: TraceHead, finding: dict[str, Any]) -> TraceHead:
    """Remember a detector finding of the chain (the first :data:`MAX_FINDINGS`)."""
    if len(head.findings) >= MAX_FINDINGS:
        return head
    return head.model_copy(update={"findings": (*head.findings, finding)})


def chunk_key(correlation_id: str, number: int) -> str:
    """The store key of one chunk of a chain's steps."""
    return f"{correlation_id}#{number}"


def chunk_keys(head: TraceHead) -> list[str]:
    """The keys of every chunk the chain still keeps, oldest first."""
    return [chunk_key(head.correlation_id, n) for n in range(head.first_chunk, head.open_chunk + 1)]


def expired(head: TraceHead, now_us: int, retention_s: float) -> bool:
    """Whether the chain has been idle for longer than the retention."""
    return now_us - head.last_at > retention_s * US


def _is_failure(step: dict[str, Any]) -> bool:
    return bool(step["status"] == "error" or step["type"] == "error")


def _depths(parents: dict[str, str]) -> dict[str, int]:
    depths: dict[str, int] = {}
    for task in parents:
        seen, node, depth = set(), task, 0
        while node in parents and node not in seen:  # a cycle in bad data must not hang
            seen.add(node)
            node, depth = parents[node], depth + 1
        depths[task] = depth
    return depths


def _step_node(task_id: str, index: int, events: list[dict[str, Any]]) -> dict[str, Any]:
    start = min(e["at"] for e in events)
    end = max(e["at"] + int((e.get("dur") or 0) * 1000) for e in events)
    llm_tokens = sum(e.get("tok", 0) for e in events if e["type"] == "llm_call")
    llm_cost = sum(e.get("cost", 0.0) for e in events if e["type"] == "llm_call")
    # step_end repeats the step's llm spend: count it only when no llm call was recorded.
    if not llm_tokens and not llm_cost:
        llm_tokens = sum(e.get("tok", 0) for e in events if e["type"] == "step_end")
        llm_cost = sum(e.get("cost", 0.0) for e in events if e["type"] == "step_end")
    statuses = {e["status"] for e in events}
    if any(_is_failure(e) for e in events):
        status = "error"
    elif "killed" in statuses:
        status = "killed"
    elif "paused" in statuses:
        status = "paused"
    else:
        status = "ok"
    action = next((e["action"] for e in events if e.get("action")), None)
    tools = list(dict.fromkeys(e["tool"] for e in events if e.get("tool")))
    errors = [e["error"] for e in events if e.get("error")]
    return {
        "task_id": task_id,
        "step": index,
        "action": action,
        "tools": tools,
        "started_at": start,
        "duration_ms": round((end - start) / 1000, 3),
        "tokens": llm_tokens,
        "cost_usd": round(llm_cost, 6),
        "status": status,
        "errors": errors,
        "events": [
            {k: e[k] for k in ("id", "type", "at", "status", "tool", "stage", "error") if k in e}
            for e in events
        ],
        "root_cause": False,
    }


def _root_cause(
    steps: list[dict[str, Any]], depths: dict[str, int], findings: Iterable[dict[str, Any]]
) -> tuple[dict[str, Any] | None, str | None]:
    failures = [s for s in steps if _is_failure(s)]
    if failures:
        first = min(failures, key=lambda s: (s["at"], depths.get(s["task"], 0)))
        what = first.get("error") or (
            f"tool {first['tool']!r} failed ({first['type']}, status {first['status']})"
            if first.get("tool")
            else f"{first['type']} with status {first['status']}"
        )
        return first, what
    by_id = {s["id"]: s for s in steps}
    for finding in sorted(findings, key=lambda f: f.get("at", 0)):
        if finding.get("level", "breach") != "breach":
            continue
        evidence = [by_id[i] for i in finding.get("evidence", ()) if i in by_id]
        if evidence:
            trigger = max(evidence, key=lambda s: s["at"])
            return trigger, f"{finding.get('detector')}: {finding.get('detail', '')}"
    kills = [s for s in steps if s["status"] == "killed"]
    if kills:
        first = min(kills, key=lambda s: s["at"])
        return first, "killed"
    return None, None


def build_trace(
    correlation_id: str,
    steps: Iterable[dict[str, Any]],
    *,
    findings: Iterable[dict[str, Any]] = (),
    dropped: int = 0,
) -> dict[str, Any]:
    """The chain as a tree of tasks (by parent links) with their steps and the root cause."""
    ordered = sorted(steps, key=lambda s: (s["at"], s["task"], s["step"]))
    findings = list(findings)
    parents: dict[str, str] = {}
    agents: dict[str, str] = {}
    agent_types: dict[str, str] = {}
    by_step: dict[tuple[str, int], list[dict[str, Any]]] = {}
    lifecycle: dict[str, list[dict[str, Any]]] = {}
    for s in ordered:
        task = s["task"]
        agents.setdefault(task, s["agent"])
        if s.get("agent_type"):
            agent_types.setdefault(task, s["agent_type"])
        if s.get("parent_task") and s["parent_task"] != task:
            parents.setdefault(task, s["parent_task"])
        lifecycle.setdefault(task, [])
        # The task's start and end belong to the task, not to whichever step was current.
        if s["type"] in _LIFECYCLE:
            lifecycle[task].append(s)
        else:
            by_step.setdefault((task, s["step"]), []).append(s)
    depths = _depths(parents)
    cause, cause_text = _root_cause(ordered, depths, findings)

    tasks: dict[str, dict[str, Any]] = {
        task_id: {
            "task_id": task_id,
            "agent_id": agents[task_id],
            "agent_type": agent_types.get(task_id),
            "parent_task_id": parents.get(task_id),
            "steps": [],
            "children": [],
        }
        for task_id in lifecycle
    }
    for (task_id, index), events in by_step.items():
        step = _step_node(task_id, index, events)
        if cause is not None and cause["type"] not in _LIFECYCLE:
            step["root_cause"] = (cause["task"], cause["step"]) == (task_id, index)
        tasks[task_id]["steps"].append(step)

    for task_id, node in tasks.items():
        node["steps"].sort(key=lambda s: (s["step"], s["started_at"]))
        own = lifecycle[task_id] + [e for s in node["steps"] for e in s["events"]]
        end = next((e for e in lifecycle[task_id] if e["type"] == "task_end"), None)
        node["started_at"] = min(e["at"] for e in own)
        node["ended_at"] = end["at"] if end else None
        node["duration_ms"] = round((max(e["at"] for e in own) - node["started_at"]) / 1000, 3)
        node["error"] = end.get("error") if end else None
        node["tokens"] = sum(s["tokens"] for s in node["steps"])
        node["cost_usd"] = round(sum(s["cost_usd"] for s in node["steps"]), 6)
        node["status"] = (
            end["status"]
            if end
            else ("error" if any(s["status"] == "error" for s in node["steps"]) else "running")
        )
        node["root_cause"] = any(s["root_cause"] for s in node["steps"]) or (
            cause is not None and cause["type"] in _LIFECYCLE and cause["task"] == task_id
        )

    def reaches_root(task_id: str) -> bool:
        seen = set()
        while task_id in parents and parents[task_id] in tasks:
            if task_id in seen:
                return False  # a cycle in bad data: no root above this task
            seen.add(task_id)
            task_id = parents[task_id]
        return True

    roots = []
    for task_id, node in sorted(tasks.items(), key=lambda item: item[1]["started_at"]):
        parent = parents.get(task_id)
        # A parent outside the kept window (dropped, or another chain) makes a root here.
        if parent in tasks and reaches_root(task_id):
            tasks[parent]["children"].append(node)
        else:
            roots.append(node)

    root_cause = None
    if cause is not None:
        root_cause = {
            "event_id": cause["id"],
            "agent_id": cause["agent"],
            "task_id": cause["task"],
            "step": cause["step"],
            "at": cause["at"],
            "what": cause_text,
        }
    first = ordered[0]["at"] if ordered else None
    last = ordered[-1]["at"] if ordered else None
    return {
        "correlation_id": correlation_id,
        "events": len(ordered),
        "dropped_events": dropped,
        "tasks": len(tasks),
        "agents": sorted(set(agents.values())),
        "started_at": first,
        "duration_ms": round((last - first) / 1000, 3) if first is not None and last else 0.0,
        "tokens": sum(n["tokens"] for n in tasks.values()),
        "cost_usd": round(sum(n["cost_usd"] for n in tasks.values()), 6),
        "root_cause": root_cause,
        "findings": findings,
        "roots": roots,
    }
