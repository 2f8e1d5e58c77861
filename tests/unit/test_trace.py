"""Incident reconstruction: bounded chunked store, the tree by parent links, the root cause."""

from __future__ import annotations

from typing import Any

from app.trace import TraceHead, add_finding, append_step, build_trace, compact, expired
from tests.unit.events import S, event


def chain_event(kind: str, at: float, agent: str, task: str, **fields: Any) -> dict[str, Any]:
    return event(kind, at, agent_id=agent, task_id=task, correlation_id="c1", **fields)


def three_agent_chain() -> list[dict[str, Any]]:
    """planner -> executor -> validator; the executor's tool fails first, then the others."""
    p, e, v = ("planner", "tp"), ("executor", "te"), ("validator", "tv")
    return [
        chain_event("task_start", 1, *p),
        chain_event("step_start", 1.1, *p, step_index=1, action="plan"),
        chain_event("llm_call", 1.2, *p, step_index=1, prompt_tokens=100, completion_tokens=50),
        chain_event("step_end", 1.3, *p, step_index=1, prompt_tokens=100, completion_tokens=50),
        chain_event("task_start", 2, *e, parent_task_id="tp", parent_agent_id="planner"),
        chain_event("step_start", 2.1, *e, step_index=1, action="fetch", parent_task_id="tp"),
        chain_event(
            "tool_call",
            2.2,
            *e,
            step_index=1,
            tool_name="http_get",
            status="error",
            duration_ms=120.0,
            parent_task_id="tp",
        ),
        chain_event("task_start", 2.5, *v, parent_task_id="te"),
        chain_event(
            "error",
            3,
            *v,
            step_index=1,
            status="error",
            error_type="ValueError",
            error_message="empty input",
            parent_task_id="te",
        ),
        chain_event("task_end", 3.1, *v, status="error", parent_task_id="te"),
        chain_event("task_end", 3.2, *e, status="error", parent_task_id="tp"),
        chain_event("task_end", 4, *p, status="error"),
        chain_event("heartbeat", 4.5, *p),
    ]


def steps_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in map(compact, events) if s is not None]


def test_the_tree_follows_parent_links_and_the_first_failure_is_the_root_cause() -> None:
    trace = build_trace("c1", steps_of(three_agent_chain()))
    assert trace["events"] == 12, "heartbeats stay out of traces"
    assert trace["tasks"] == 3 and trace["agents"] == ["executor", "planner", "validator"]
    [planner] = trace["roots"]
    [executor] = planner["children"]
    [validator] = executor["children"]
    assert (planner["task_id"], executor["task_id"], validator["task_id"]) == ("tp", "te", "tv")
    assert trace["root_cause"]["task_id"] == "te" and trace["root_cause"]["step"] == 1
    assert executor["root_cause"] and not planner["root_cause"] and not validator["root_cause"]
    failing = next(s for s in executor["steps"] if s["step"] == 1)
    assert failing["root_cause"] and failing["status"] == "error"
    assert failing["tools"] == ["http_get"]
    assert failing["duration_ms"] == 220.0, "from the step start to the end of the 120 ms call"
    plan = next(s for s in planner["steps"] if s["step"] == 1)
    assert plan["tokens"] == 150, "step_end repeats the llm call's tokens: counted once"
    assert planner["status"] == "error" and validator["status"] == "error"
    assert validator["steps"][-1]["errors"] == ["ValueError: empty input"]
    assert trace["duration_ms"] == 3000.0


def test_without_failures_the_breach_evidence_is_the_root_cause_then_the_kill() -> None:
    events = [
        chain_event("task_start", 1, "looper", "t1"),
        *[
            chain_event("tool_call", 1 + i, "looper", "t1", step_index=i, tool_name="kb")
            for i in (1, 2, 3)
        ],
        chain_event("control_ack", 5, "looper", "t1", step_index=3, status="killed"),
        chain_event("task_end", 5.1, "looper", "t1", step_index=3, status="killed"),
    ]
    steps = steps_of(events)
    killed_only = build_trace("c1", steps)
    assert killed_only["root_cause"]["what"] == "killed"
    finding = {
        "detector": "reasoning_loop",
        "level": "breach",
        "detail": "kb called 3 times",
        "evidence": [e["event_id"] for e in events[1:4]],
        "at": 4 * S,
    }
    warned = build_trace("c1", steps, findings=[{**finding, "level": "warning"}, finding])
    cause = warned["root_cause"]
    assert cause["event_id"] == events[3]["event_id"], "the last evidence event triggered it"
    assert cause["what"].startswith("reasoning_loop")
    assert warned["roots"][0]["status"] == "killed"


def test_a_parent_outside_the_chain_or_a_cycle_makes_roots_not_a_hang() -> None:
    events = [
        chain_event("task_start", 1, "a", "ta", parent_task_id="tb"),
        chain_event("task_start", 2, "b", "tb", parent_task_id="ta"),
        chain_event("task_start", 3, "c", "tc", parent_task_id="elsewhere"),
    ]
    trace = build_trace("c1", steps_of(events))
    assert sorted(r["task_id"] for r in trace["roots"]) == ["ta", "tb", "tc"]
    assert trace["root_cause"] is None


def test_the_store_keeps_chunks_bounded_and_drops_the_oldest() -> None:
    head, open_steps, writes, evictions = None, [], {}, []
    for i in range(1050):
        step = {"id": str(i), "at": i, "type": "step_start", "task": "t", "step": i, "agent": "a"}
        head, open_steps, chunk, evicted = append_step(
            head, open_steps, step, correlation_id="c1", max_events=500, chunk_events=100
        )
        writes[chunk] = open_steps
        if head.open_size == 0:
            open_steps = []
        for number in evicted:
            writes.pop(number)
            evictions.append(number)
    assert head is not None
    assert evictions == [0, 1, 2, 3, 4, 5]
    assert (head.first_chunk, head.open_chunk, head.open_size) == (6, 10, 50)
    assert head.kept == 450 and head.dropped == 600
    kept = [s for n in range(head.first_chunk, head.open_chunk + 1) for s in writes.get(n, [])]
    assert [s["id"] for s in kept] == [str(i) for i in range(600, 1050)]
    assert (head.first_at, head.last_at) == (0, 1049)


def test_findings_are_capped_and_chains_expire() -> None:
    head = TraceHead(correlation_id="c1", last_at=10 * S)
    for i in range(60):
        head = add_finding(head, {"detector": "d", "at": i})
    assert len(head.findings) == 50
    assert not expired(head, 100 * S, retention_s=3600)
    assert expired(head, 3700 * S, retention_s=3600)


def test_a_chain_of_10000_events_from_20_tasks_builds_whole() -> None:
    # How fast it builds is bench.trace's to measure (10,000 events in one chain).
    steps = []
    for t in range(20):
        for i in range(500):
            e = chain_event(
                "tool_call",
                t + i / 1000,
                f"agent-{t}",
                f"t{t}",
                step_index=i // 5,
                tool_name="x",
                parent_task_id=f"t{t - 1}" if t else None,
            )
            steps.append(compact(e))
    trace = build_trace("c1", steps)
    assert trace["events"] == 10_000 and trace["tasks"] == 20


def test_a_sweep_deletes_only_idle_records_of_the_partition_being_processed() -> None:
    from app.fleet import TaskView
    from app.operator_api import select_expired

    old_here = TraceHead(
        correlation_id="old", first_chunk=2, open_chunk=3, last_at=1 * S, partition=1
    )
    old_elsewhere = TraceHead(correlation_id="old2", last_at=1 * S, partition=2)
    fresh = TraceHead(correlation_id="fresh", last_at=3000 * S, partition=1)
    tasks = [
        (
            "t-old",
            TaskView(
                task_id="t-old", agent_id="a", correlation_id="old", last_event_at=S, partition=1
            ),
        ),
        (
            "t-new",
            TaskView(
                task_id="t-new",
                agent_id="a",
                correlation_id="fresh",
                last_event_at=3000 * S,
                partition=1,
            ),
        ),
        (
            "t-other",
            TaskView(
                task_id="t-other", agent_id="b", correlation_id="old2", last_event_at=S, partition=2
            ),
        ),
    ]
    chains, chunks, gone = select_expired(
        [("old", old_here), ("old2", old_elsewhere), ("fresh", fresh)],
        tasks,
        now=3700 * S,
        partition=1,
        retention_s=3600,
    )
    assert chains == ["old"]
    assert chunks == ["old#2", "old#3"]
    assert gone == [("t-old", "a")]


def test_a_task_that_ends_in_error_without_an_error_event_is_the_root_cause() -> None:
    events = [
        chain_event("task_start", 1, "parent", "tp"),
        chain_event("step_start", 1.5, "parent", "tp", step_index=1, action="delegate"),
        chain_event("task_start", 2, "child", "tc", parent_task_id="tp"),
        chain_event("task_end", 3, "child", "tc", status="error", error_type="TimeoutError"),
        chain_event("task_end", 4, "parent", "tp", step_index=1),
    ]
    trace = build_trace("c1", steps_of(events))
    [parent] = trace["roots"]
    [child] = parent["children"]
    assert [s["step"] for s in parent["steps"]] == [1], "start and end are not steps"
    assert child["steps"] == [] and child["root_cause"] and not parent["root_cause"]
    assert (child["status"], child["error"]) == ("error", "TimeoutError")
    assert trace["root_cause"]["task_id"] == "tc"
