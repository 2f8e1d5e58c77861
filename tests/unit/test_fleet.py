"""The fleet view: task states from events, agent rows, tokens per minute, silence."""

from __future__ import annotations

from typing import Any

from app.fleet import TaskView, agent_rows, apply_event, task_state, tokens_per_minute
from tests.unit.events import S, event


def fold(*events: dict[str, Any]) -> TaskView:
    view = None
    for e in events:
        view = apply_event(view, e)
    assert view is not None
    return view


def test_a_started_task_runs_and_shows_its_current_step() -> None:
    view = fold(
        event("task_start", 1, heartbeat_interval_s=10.0, agent_type="support-bot"),
        event("step_start", 2, step_index=1, action="search"),
        event("tool_call", 3, step_index=1, tool_name="kb_search"),
    )
    assert view.state == "running"
    assert view.agent_type == "support-bot"
    assert view.step_index == 1
    assert view.current_step == "kb_search()"
    assert view.started_at == 1 * S and view.last_event_at == 3 * S


def test_control_acks_move_the_state_and_an_ended_task_stays_ended() -> None:
    start = event("task_start", 1)
    paused = fold(start, event("control_ack", 2, status="paused", command_id="c1"))
    assert paused.state == "paused" and paused.last_command_id == "c1"
    resumed = apply_event(paused, event("control_ack", 3, status="resumed"))
    assert resumed.state == "running"
    killed = apply_event(resumed, event("control_ack", 4, status="killed"))
    assert killed.state == "killed"
    ended = apply_event(killed, event("task_end", 5, status="killed"))
    assert (ended.state, ended.status) == ("killed", "killed")
    late_ack = apply_event(
        fold(start, event("task_end", 2)), event("control_ack", 3, status="paused")
    )
    assert late_ack.state == "finished", "an ack after the end must not revive the task"


def test_task_end_with_error_is_finished_with_status_error() -> None:
    view = fold(
        event("task_start", 1),
        event("error", 2, status="error"),
        event("task_end", 3, status="error"),
    )
    assert (view.state, view.status, view.errors) == ("finished", "error", 2)


def test_spend_counts_llm_calls_once_and_tokens_per_minute_slides() -> None:
    view = fold(
        event("task_start", 0),
        event("llm_call", 10, prompt_tokens=100, completion_tokens=20, cost_usd=0.01),
        event("step_end", 10.5, prompt_tokens=100, completion_tokens=20, cost_usd=0.01),
        event("llm_call", 50, prompt_tokens=30, completion_tokens=0, cost_usd=0.002),
    )
    assert view.tokens == 150
    assert abs(view.cost_usd - 0.012) < 1e-9
    assert tokens_per_minute(view, 55 * S) == 150
    assert tokens_per_minute(view, 75 * S) == 30, "the call at 10 s left the last minute"
    assert tokens_per_minute(view, 200 * S) == 0


def test_a_running_task_without_heartbeats_for_two_intervals_is_silent() -> None:
    view = fold(event("task_start", 0, heartbeat_interval_s=1.0), event("heartbeat", 5))
    assert task_state(view, int(6.5 * S)) == "running"
    assert task_state(view, int(7.5 * S)) == "silent"
    finished = apply_event(view, event("task_end", 6))
    assert task_state(finished, 100 * S) == "finished"


def test_agent_rows_aggregate_tasks_and_a_live_task_speaks_for_the_agent() -> None:
    old = fold(
        event("task_start", 1, task_id="t-old"),
        event("llm_call", 2, task_id="t-old", prompt_tokens=10, cost_usd=0.5),
        event("task_end", 3, task_id="t-old"),
    )
    live = fold(
        event("task_start", 4, task_id="t-new", heartbeat_interval_s=10.0),
        event("heartbeat", 5, task_id="t-new"),
        event("llm_call", 6, task_id="t-new", prompt_tokens=5, cost_usd=0.25),
    )
    other = fold(event("task_start", 1, agent_id="a0", task_id="t-a0"))
    rows = agent_rows([old, live, other], 7 * S)
    assert [r.agent_id for r in rows] == ["a0", "a1"]
    row = rows[1]
    assert (row.state, row.task_id, row.tasks) == ("running", "t-new", 2)
    assert row.tokens == 15 and row.cost_usd == 0.75
    assert row.tokens_per_minute == 15
    assert row.last_heartbeat_at == 5 * S
