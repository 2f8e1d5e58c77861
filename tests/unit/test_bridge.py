"""The agent-side bridge without a broker: events a run emits, input guard, propagation."""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from agents_bridge import AgentKilled, InvalidEventError, in_context, log_limit, propagation
from agents_bridge.codec import codec
from agents_bridge.event_frame import FrameExpander
from agents_bridge.journal import Journal
from agents_bridge.pricing import PriceTable
from agents_bridge.run import AgentRun, RunSettings
from agents_bridge.validation import InputGuard
from tests.unit.events import SIX_STAGES


class Recorder:
    """Runs wired to a list instead of the background producer."""

    def __init__(self, strict: bool = False, **options: Any) -> None:
        self.events: list[dict[str, Any]] = []
        expander = FrameExpander()
        self.checkpoints: list[tuple[AgentRun, dict[str, Any]]] = []
        self.guard = InputGuard(strict, max_text_chars=50, redact=options.pop("redact", None))
        self.shared = RunSettings(
            emit=lambda frame: self.events.append(expander.record(frame)),
            on_close=lambda run: None,
            checkpoint=lambda run, command: self.checkpoints.append((run, command)),
            guard=self.guard,
            prices=PriceTable.load(None, {"tiny-model": (1.0, 2.0)}),
            producer_id="p1",
            sequence=itertools.count(1),
            **options,
        )

    def run(self, agent_id: str = "a1", **ids: Any) -> AgentRun:
        parent = propagation.current()
        return AgentRun(
            self.shared,
            agent_id=agent_id,
            agent_type=None,
            task_id=ids.get("task_id", f"{agent_id}-task"),
            correlation_id=ids.get("correlation_id")
            or (parent.correlation_id if parent else f"{agent_id}-task"),
            parent_agent_id=parent.agent_id if parent else None,
            parent_task_id=parent.task_id if parent else None,
        )

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_type"] == event_type]


def test_a_tool_call_is_recorded_at_six_stages_with_their_own_timestamps() -> None:
    recorder = Recorder()
    with recorder.run() as run, run.tool("search", {"q": "x"}) as call:
        call.response_received(output_summary="3 hits")
    stages = [e["tool_stage"] for e in recorder.of("tool_call")]
    assert stages == SIX_STAGES
    received = recorder.of("tool_call")[3]
    assert received["duration_ms"] is not None and received["duration_ms"] >= 0
    times = [e["emitted_at"] for e in recorder.of("tool_call")]
    assert times == sorted(times)
    sequences = [e["sequence"] for e in recorder.events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


def test_a_failing_tool_and_a_swallowed_parse_failure_are_recorded() -> None:
    recorder = Recorder()
    with recorder.run() as run:
        with pytest.raises(TimeoutError), run.tool("api"):
            raise TimeoutError("slow")
        call = run.tool("api", {"id": 1})
        call.params_extracted()
        call.invoked()
        call.response_received()
        call.response_parsed(ok=False, error="not JSON")
        call.reasoning_reentered()
    received = [e for e in recorder.of("tool_call") if e["tool_stage"] == "response_received"]
    assert (received[0]["status"], received[0]["error_type"]) == ("error", "TimeoutError")
    parsed = [e for e in recorder.of("tool_call") if e["tool_stage"] == "response_parsed"]
    assert parsed[-1]["status"] == "error" and parsed[-1]["error_message"] == "not JSON"


def test_private_text_leaves_only_as_a_hash_unless_opted_in() -> None:
    recorder = Recorder()
    with recorder.run() as run:
        run.step("think", context="the secret prompt", reasoning="I should")
    step = recorder.of("step_start")[0]
    assert step["context_hash"] and step["input_summary"] is None
    assert step["reasoning_excerpt"] is None
    opted_in = Recorder(
        capture_reasoning=True,
        capture_context=True,
        redact=lambda text: text.replace("secret", "[redacted]"),
    )
    with opted_in.run() as run:
        run.step("think", context="the secret prompt", reasoning="I should")
    step = opted_in.of("step_start")[0]
    assert step["input_summary"] == "the [redacted] prompt"
    assert step["reasoning_excerpt"] == "I should"


def test_cost_comes_from_the_price_table_and_steps_total_their_calls() -> None:
    recorder = Recorder()
    with recorder.run() as run:
        run.step("answer")
        run.llm_call(model="tiny-model-2026", prompt_tokens=1_000_000, completion_tokens=500_000)
        run.llm_call(model="unknown", prompt_tokens=10, completion_tokens=10)
        run.end_step()
    costs = [e["cost_usd"] for e in recorder.of("llm_call")]
    assert costs == [2.0, None]
    end = recorder.of("step_end")[0]
    assert (end["prompt_tokens"], end["completion_tokens"], end["cost_usd"]) == (
        1_000_010,
        500_010,
        2.0,
    )


def test_lenient_mode_counts_bad_input_and_never_raises() -> None:
    recorder = Recorder()
    with recorder.run() as run:
        run.llm_call(prompt_tokens=-5, completion_tokens=3)
        run.tool_call("t", {"when": object()})
        run.step("x" * 500)
    assert dict(recorder.guard.problems) == {
        "bad_count": 1,
        "unserialisable_args": 1,
        "oversize": 1,
    }
    assert recorder.of("llm_call")[0]["prompt_tokens"] == 0
    assert recorder.of("tool_call")[0].get("tool_args_hash") is None
    assert len(recorder.of("step_start")[0]["action"]) == 50


@pytest.mark.parametrize(
    "bad",
    [
        lambda run: run.llm_call(prompt_tokens=-5, completion_tokens=3),
        lambda run: run.tool_call("t", {"when": object()}),
        lambda run: run.step("x" * 500),
    ],
)
def test_strict_mode_raises_a_clear_error(bad: Any) -> None:
    recorder = Recorder(strict=True)
    with recorder.run() as run, pytest.raises(InvalidEventError):
        bad(run)


def test_a_kill_stops_sync_code_at_the_next_boundary_and_is_acked_once() -> None:
    recorder = Recorder()
    command = {
        "command_id": "k1",
        "kind": "KILL",
        "target_type": "agent",
        "target_id": "a1",
        "reason": "loop",
        "issued_at": 1,
    }
    with pytest.raises(AgentKilled), recorder.run() as run:
        run.step("one")
        run.apply(command)
        run.apply(command)
        run.step("two")
    assert len(recorder.of("control_ack")) == 1
    assert recorder.of("task_end")[0]["status"] == "killed"
    assert [e["step_index"] for e in recorder.of("step_start")] == [1]


async def test_sub_agents_in_asyncio_tasks_and_threads_join_the_chain() -> None:
    recorder = Recorder()
    seen: dict[str, AgentRun] = {}

    def thread_child() -> None:
        with recorder.run("thread-child") as run:
            seen["thread"] = run

    async def task_child() -> None:
        with recorder.run("task-child") as run:
            seen["task"] = run

    with recorder.run("planner") as planner:
        await asyncio.create_task(task_child())
        worker = threading.Thread(target=in_context(thread_child))
        worker.start()
        worker.join()
        plain = threading.Thread(target=lambda: seen.setdefault("plain", recorder.run("orphan")))
        plain.start()
        plain.join()
    for name in ("task", "thread"):
        assert seen[name].correlation_id == planner.correlation_id
        assert (seen[name].parent_agent_id, seen[name].parent_task_id) == (
            "planner",
            planner.task_id,
        )
    assert seen["plain"].parent_agent_id is None, "a plain thread does not inherit context"
    assert propagation.current() is None


def test_a_carrier_round_trips_through_headers() -> None:
    recorder = Recorder()
    with recorder.run("planner") as planner:
        headers = planner.carrier()
    parent = propagation.from_carrier({k.upper(): v.encode() for k, v in headers.items()})
    assert parent == planner.context
    assert propagation.from_carrier({"unrelated": "x"}) is None


class TestJournal:
    def test_appends_replays_in_order_and_compacts(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path, max_bytes=10_000)
        journal.append([("t.a", b"a", b"\x00one"), ("t.b", b"b", b"two\x00")])
        journal.append([("t.a", b"a", b"three")])
        entries, position = journal.read(limit=2)
        assert entries == [("t.a", b"a", b"\x00one"), ("t.b", b"b", b"two\x00")]
        journal.mark_replayed(position)
        again = Journal(tmp_path, max_bytes=10_000)  # another process, later
        assert again.pending()
        entries, position = again.read()
        assert entries == [("t.a", b"a", b"three")]
        again.mark_replayed(position)
        assert not again.pending()
        assert (tmp_path / "journal.log").stat().st_size == 0

    def test_refuses_and_counts_what_does_not_fit(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path, max_bytes=64)
        refused = journal.append([("t", b"k", b"x" * 30), ("t", b"k", b"y" * 30)])
        assert refused == 1 and journal.refused == 1
        assert [e[2] for e in journal] == [b"x" * 30]

    def test_a_torn_write_at_a_crash_is_not_replayed(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path, max_bytes=10_000)
        journal.append([("t", b"k", b"whole")])
        with (tmp_path / "journal.log").open("ab") as log:
            log.write(b"\x00\x00\x00\x40partial")
        assert [e[2] for e in Journal(tmp_path, max_bytes=10_000)] == [b"whole"]


def test_a_frame_expands_to_a_whole_event_with_an_id_of_its_own() -> None:
    recorder = Recorder()
    with recorder.run("a1", task_id="t1", correlation_id="c1") as run:
        run.step("plan", input_summary="what next")
    step = recorder.events[1]
    assert [e["event_type"] for e in recorder.events] == ["task_start", "step_start", "task_end"]
    assert len({e["event_id"] for e in recorder.events}) == 3
    for event in recorder.events:
        assert (event["agent_id"], event["task_id"], event["correlation_id"]) == ("a1", "t1", "c1")
        assert event["producer_id"] == "p1"
        decoded = codec.decode(codec.encode("trc.AgentEvent", event))[1]  # fits the schema
        assert event.items() <= decoded.items()
    assert (step["step_index"], step["action"], step["input_summary"]) == (1, "plan", "what next")


def test_a_repeated_log_message_passes_once_a_minute_with_a_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(log_limit.time, "monotonic", lambda: clock[0])
    limit = log_limit.RepeatLimit(every_s=60)

    def passes(msg: str) -> str | None:
        args = ("b1",) if "%s" in msg else ()
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, msg, args, None)
        return record.getMessage() if limit.filter(record) else None

    assert passes("broker %s unreachable") == "broker b1 unreachable"
    assert passes("another message") == "another message"
    clock[0] += 30
    assert [passes("broker %s unreachable") for _ in range(4)] == [None] * 4
    clock[0] += 31
    assert passes("broker %s unreachable") == (
        "broker b1 unreachable (4 more like this in the last 61 s)"
    )
    assert passes("broker %s unreachable") is None
    # A record one filter passed (the sender's logger) passes another (a handler) as it is.
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "once", (), None)
    handler_limit = log_limit.RepeatLimit(every_s=60)
    assert limit.filter(record) and handler_limit.filter(record) and handler_limit.filter(record)


def test_ids_that_are_not_plain_strings_are_recorded_as_their_characters() -> None:
    class Kind(enum.StrEnum):
        SUPPORT = "support-bot"

    recorder = Recorder()
    run = AgentRun(
        recorder.shared,
        agent_id="a1",
        agent_type=Kind.SUPPORT,
        task_id=42,  # type: ignore[arg-type]
        correlation_id="c1",
        parent_agent_id=None,
        parent_task_id=None,
    )
    with run:
        run.step("plan")
    assert {(e["agent_type"], e["task_id"]) for e in recorder.events} == {("support-bot", "42")}
    assert type(recorder.events[0]["agent_type"]) is str
    assert recorder.guard.problems == {"bad_id": 1}
    with pytest.raises(InvalidEventError, match="task_id must be a string"):
        Recorder(strict=True).run("a1", task_id=42)
