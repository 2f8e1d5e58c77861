"""The policy file, decisions, escalation, hot reload and the engine's wiring."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.detectors.finding import Finding
from app.detectors.latency import ToolBaseline
from app.engine import ChainState, TaskState, process_chain_event
from app.ingest import invalid_reason
from app.policy import BreachWindow, PolicyConfig, PolicyError, PolicyStore, decide, load_policy
from app.policy.config import parse_policy
from tests.unit.events import event


def finding(detector: str, level: str = "breach", task: str = "t1", at: int = 1) -> Finding:
    return Finding(
        detector=detector,
        agent_id="a1",
        task_id=task,
        correlation_id="c1",
        detail=f"{detector} happened",
        evidence=("e",),
        trigger_emitted_at=at,
        level=level,
    )  # type: ignore[arg-type]


class TestPolicyFile:
    def test_defaults_without_a_file(self) -> None:
        policy = load_policy(None)
        assert policy.defaults.steps.kill == 35
        assert policy.for_agent_type("anything") is policy.defaults

    def test_agent_type_overrides_merge_into_the_defaults(self) -> None:
        policy = parse_policy(
            {
                "defaults": {"steps": {"warn": 20, "kill": 40}},
                "agent_types": {"support": {"steps": {"kill": 25}}},
            }
        )
        support = policy.for_agent_type("support")
        assert (support.steps.warn, support.steps.kill) == (20, 25)
        assert policy.for_agent_type(None).steps.kill == 40

    @pytest.mark.parametrize(
        ("document", "names"),
        [
            ({"defaults": {"steps": {"kill": -1}}}, "defaults.steps.kill"),
            (
                {"defaults": {"categories": {"reasoning_loop": "explode"}}},
                "'expected_error', 'recoverable' or 'runaway'",
            ),
            ({"defaults": {"stepz": {}}}, "defaults.stepz"),
            (
                {"agent_types": {"bot": {"loop": {"max_repeats": 1}}}},
                "agent_types.bot.loop.max_repeats",
            ),
            ({"default": {}}, "allowed: defaults, agent_types"),
        ],
    )
    def test_a_bad_file_names_the_key_and_the_allowed_values(
        self, document: dict[str, object], names: str
    ) -> None:
        with pytest.raises(PolicyError, match=names.replace(".", r"\.").replace("(", r"\(")):
            parse_policy(document)

    def test_bad_toml_and_missing_files(self, tmp_path: Path) -> None:
        broken = tmp_path / "p.toml"
        broken.write_text("[defaults\n")
        with pytest.raises(PolicyError, match="not valid TOML"):
            load_policy(broken)
        with pytest.raises(PolicyError, match="does not exist"):
            load_policy(tmp_path / "missing.toml")


class TestHotReload:
    def test_a_change_is_picked_up_and_a_bad_change_is_rejected(self, tmp_path: Path) -> None:
        path = tmp_path / "policy.toml"
        path.write_text("[defaults.steps]\nwarn = 5\nkill = 9\n")
        store = PolicyStore(path, check_interval_s=0)
        assert store.current().defaults.steps.kill == 9
        path.write_text("[defaults.steps]\nwarn = 5\nkill = 12\n")
        os.utime(path, ns=(1, 10**18))  # a distinct mtime, whatever the clock resolution
        assert store.current().defaults.steps.kill == 12 and store.reloads == 1
        path.write_text("[defaults.steps]\nwarn = 50\nkill = 12\n")
        os.utime(path, ns=(1, 2 * 10**18))
        assert store.current().defaults.steps.kill == 12, "the last good policy stays"
        assert store.rejected_reloads == 1 and "warn" in (store.last_error or "")


class TestDecide:
    policy = PolicyConfig()

    def test_categories(self) -> None:
        assert decide(finding("reasoning_loop"), self.policy)[1].kill
        recoverable = decide(finding("latency_spike"), self.policy)[1]
        assert (recoverable.category, recoverable.kill) == ("recoverable", False)
        assert decide(finding("made_up"), self.policy)[1].kill is False

    def test_warnings_and_signals_never_kill(self) -> None:
        assert not decide(finding("reasoning_loop", "warning"), self.policy)[1].kill
        signal = decide(finding("tool_error", "signal"), self.policy)[1]
        assert (signal.category, signal.kill) == ("expected_error", False)

    def test_two_distinct_breaches_in_a_chain_escalate(self) -> None:
        window, first = decide(finding("latency_spike", at=1), self.policy, BreachWindow())
        assert not first.kill
        window, again = decide(finding("latency_spike", at=2), self.policy, window)
        assert not again.kill, "the same detector twice is not a correlation"
        _, second = decide(finding("task_duration", at=3), self.policy, window)
        assert second.kill and second.target_type == "task"
        assert "correlated breaches (latency_spike, task_duration)" in second.reason

    def test_breaches_in_two_tasks_of_a_chain_kill_the_chain(self) -> None:
        window, _ = decide(finding("latency_spike", task="t1"), self.policy, BreachWindow())
        _, decision = decide(finding("task_duration", task="t2"), self.policy, window)
        assert (decision.target_type, decision.target_id) == ("chain", "c1")

    def test_breaches_outside_the_window_do_not_correlate(self) -> None:
        policy = PolicyConfig(correlation_window_s=10)
        window, _ = decide(finding("latency_spike", at=1), policy, BreachWindow())
        _, decision = decide(finding("task_duration", at=20_000_000), policy, window)
        assert not decision.kill


class TestEngine:
    def test_a_redelivered_event_changes_nothing(self) -> None:
        policy = PolicyConfig()
        task, chain, base = TaskState(), ChainState(), ToolBaseline()
        call = event("tool_call", tool_name="s", tool_args_hash="h")
        task, chain, base, _ = process_chain_event(task, chain, base, call, policy)
        again = process_chain_event(task, chain, base, call, policy)
        assert again == (task, chain, base, [])

    def test_one_kill_per_target(self) -> None:
        policy = PolicyConfig(steps={"warn": 1, "kill": 2})  # type: ignore[arg-type]
        task, chain, base = TaskState(), ChainState(), ToolBaseline()
        kills = []
        for i in range(4):
            for e in (
                event("step_start", i),
                event("tool_call", i, tool_name="s", tool_args_hash="h"),
            ):
                task, chain, base, outcomes = process_chain_event(task, chain, base, e, policy)
                kills += [o.decision for o in outcomes if o.decision.kill]
        assert len(kills) == 1, kills


class TestEventValidation:
    def test_valid(self) -> None:
        assert invalid_reason("trc.events.a1", event("step_start")) is None

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            ({"agent_id": "other"}, "does not match its topic"),
            ({"task_id": ""}, "'task_id' is empty"),
            ({"prompt_tokens": -5}, "prompt_tokens is negative"),
            ({"duration_ms": -1.0}, "duration_ms is negative"),
            ({"emitted_at": 0}, "not a timestamp"),
        ],
    )
    def test_invalid(self, change: dict[str, object], reason: str) -> None:
        assert reason in (invalid_reason("trc.events.a1", {**event("step_start"), **change}) or "")
