"""Each detector as a pure function: thresholds, warnings, windows, once-only reports."""

from __future__ import annotations

from app.detectors.budget import BudgetConfig, BudgetState, detect_budget
from app.detectors.cascade import CascadeConfig, ChainFailures, detect_cascade
from app.detectors.duration import DurationConfig, DurationState, detect_duration
from app.detectors.latency import LatencyConfig, SpikeWindow, ToolBaseline, detect_latency
from app.detectors.malformed import MalformedState, detect_malformed
from app.detectors.retries import RetryConfig, RetryState, detect_retries
from app.detectors.silence import Heartbeat, SilenceConfig, check_silence, record_heartbeat
from app.detectors.steps import StepConfig, StepState, detect_steps
from app.detectors.tokens import TokenConfig, TokenState, detect_tokens
from tests.unit.events import S, event


def llm(step: int, tokens: int, at_s: float = 1.0, **fields: object) -> dict[str, object]:
    return event(
        "llm_call", at_s, step_index=step, prompt_tokens=tokens, completion_tokens=0, **fields
    )


class TestTokens:
    def test_a_step_three_times_the_previous_one_is_a_breach(self) -> None:
        state, config = TokenState(), TokenConfig(tokens_per_minute=10**9)
        state, findings = detect_tokens(state, llm(1, 400), config, 0.8)
        assert findings == []
        state, findings = detect_tokens(state, llm(2, 1100), config, 0.8)
        assert findings == [], "2.75x is below the 3x factor"
        state, findings = detect_tokens(state, llm(2, 100), config, 0.8)
        assert [f.detector for f in findings] == ["token_growth"]
        assert findings[0].value == 3.0
        _, findings = detect_tokens(state, llm(2, 500), config, 0.8)
        assert findings == [], "one report per step"

    def test_small_steps_are_not_compared(self) -> None:
        state, config = TokenState(), TokenConfig(min_step_tokens=200, tokens_per_minute=10**9)
        state, _ = detect_tokens(state, llm(1, 50), config, 0.8)
        _, findings = detect_tokens(state, llm(2, 1000), config, 0.8)
        assert findings == []

    def test_burn_rate_warns_then_breaches_within_a_minute(self) -> None:
        state, config = TokenState(), TokenConfig(tokens_per_minute=1000, growth_factor=100)
        state, findings = detect_tokens(state, llm(1, 700, at_s=1), config, 0.8)
        assert findings == []
        state, findings = detect_tokens(state, llm(1, 150, at_s=2), config, 0.8)
        assert [(f.detector, f.level) for f in findings] == [("token_rate", "warning")]
        state, findings = detect_tokens(state, llm(1, 200, at_s=3), config, 0.8)
        assert [(f.detector, f.level) for f in findings] == [("token_rate", "breach")]
        _, findings = detect_tokens(state, llm(1, 10, at_s=70), config, 0.8)
        assert findings == [], "a minute later the rate has dropped"

    def test_the_window_stays_small_for_an_agent_calling_its_model_flat_out(self) -> None:
        state, config = TokenState(), TokenConfig(tokens_per_minute=30_000, growth_factor=100)
        levels = []
        for i in range(3000):  # 100 calls a second for 30 s, 10 tokens each
            state, findings = detect_tokens(state, llm(1, 10, at_s=1 + i / 100), config, 0.8)
            levels += [(i, f.level) for f in findings]
        assert levels == [(2399, "warning"), (2999, "breach")], "24,000 and 30,000 tokens"
        assert len(state.per_second) == 30
        for i in range(100):  # a minute later, from a slower loop: the old seconds are gone
            state, _ = detect_tokens(state, llm(1, 10, at_s=95 + i), config, 0.8)
        assert len(state.per_second) <= 61


def tool(duration_ms: float, at_s: float = 1.0, **fields: object) -> dict[str, object]:
    return event("tool_call", at_s, tool_name="search", duration_ms=duration_ms, **fields)


class TestLatency:
    def test_one_spike_is_a_signal_and_repeated_spikes_an_anomaly(self) -> None:
        config = LatencyConfig(min_samples=5, spike_factor=5, repeat=3)
        baseline, spikes = ToolBaseline(), SpikeWindow()
        for i in range(5):
            baseline, spikes, findings = detect_latency(baseline, spikes, tool(200, i), config)
            assert findings == []
        assert round(baseline.ewma_ms) == 200
        levels = []
        for i in range(3):
            baseline, spikes, findings = detect_latency(
                baseline, spikes, tool(4000, 10 + i), config
            )
            levels += [f.level for f in findings]
        assert levels == ["signal", "signal", "breach"]
        assert round(baseline.ewma_ms) == 200, "spikes do not teach the baseline"

    def test_no_judgement_before_the_baseline_has_enough_samples(self) -> None:
        config = LatencyConfig(min_samples=5)
        baseline, spikes = ToolBaseline(), SpikeWindow()
        baseline, spikes, _ = detect_latency(baseline, spikes, tool(10), config)
        _, _, findings = detect_latency(baseline, spikes, tool(5000), config)
        assert findings == []


class TestSteps:
    def test_warn_then_kill_each_once(self) -> None:
        state, config = StepState(), StepConfig(warn=3, kill=5)
        levels = []
        for _ in range(7):
            state, findings = detect_steps(state, event("step_start"), config)
            levels += [f.level for f in findings]
        assert levels == ["warning", "breach"]

    def test_warn_must_be_below_kill(self) -> None:
        import pytest
        from pydantic import ValidationError

        with pytest.raises(ValidationError, match="warn"):
            StepConfig(warn=10, kill=5)


class TestBudget:
    def test_task_tokens_and_cost(self) -> None:
        config = BudgetConfig(task_tokens=1000, task_cost_usd=1.0)
        state, findings = detect_budget(
            BudgetState(), llm(1, 850, cost_usd=0.1), config, 0.8, "task"
        )
        assert [(f.detector, f.level) for f in findings] == [("task_budget", "warning")]
        state, findings = detect_budget(state, llm(2, 200, cost_usd=0.95), config, 0.8, "task")
        assert sorted((f.level, "USD" in f.detail) for f in findings) == [
            ("breach", False),
            ("breach", True),
        ]

    def test_agent_window_forgets_old_spend(self) -> None:
        config = BudgetConfig(agent_tokens=1000, agent_window_s=600)
        state, findings = detect_budget(BudgetState(), llm(1, 900, at_s=0), config, 0.95, "agent")
        assert findings == []
        _, findings = detect_budget(state, llm(1, 900, at_s=3600), config, 0.95, "agent")
        assert findings == [], "the first 900 tokens left the 10-minute window"
        _, findings = detect_budget(state, llm(1, 200, at_s=60), config, 0.95, "agent")
        assert [f.scope for f in findings] == ["agent"]


class TestRetries:
    def test_more_than_k_retries_of_a_failing_tool(self) -> None:
        state, config = RetryState(), RetryConfig(max_retries=2)
        found = []
        for _ in range(4):  # 1 call + 3 retries
            state, findings = detect_retries(state, tool(10, status="error"), config)
            found += findings
        assert [f.value for f in found] == [3]
        assert len(found[0].evidence) == 4

    def test_a_success_resets_the_count(self) -> None:
        state, config = RetryState(), RetryConfig(max_retries=2)
        for status in ["error", "error", "ok", "error", "error"]:
            state, findings = detect_retries(state, tool(10, status=status), config)
            assert findings == []


class TestDuration:
    def test_warns_then_breaches_from_task_start(self) -> None:
        state, config = DurationState(), DurationConfig(max_s=100)
        state, _ = detect_duration(state, event("task_start", 0), config, 0.8)
        state, findings = detect_duration(state, event("step_start", 85), config, 0.8)
        assert [f.level for f in findings] == ["warning"]
        state, findings = detect_duration(state, event("step_start", 101), config, 0.8)
        assert [f.level for f in findings] == ["breach"]
        _, findings = detect_duration(state, event("step_start", 150), config, 0.8)
        assert findings == []


class TestMalformed:
    def parse_failure(self) -> dict[str, object]:
        return event("tool_call", tool_name="api", tool_stage="response_parsed", status="error")

    def test_swallowed_parse_failure(self) -> None:
        state, _ = detect_malformed(MalformedState(), self.parse_failure())
        state, findings = detect_malformed(
            state, event("tool_call", tool_name="api", tool_stage="reasoning_reentered")
        )
        assert [f.detector for f in findings] == ["malformed_response"]
        assert state.pending is None

    def test_surfaced_parse_failure_is_fine(self) -> None:
        state, _ = detect_malformed(MalformedState(), self.parse_failure())
        state, findings = detect_malformed(state, event("error", error_type="ParseError"))
        assert findings == []
        _, findings = detect_malformed(state, event("step_start"))
        assert findings == []


class TestSilence:
    def test_silent_after_two_intervals_once(self) -> None:
        config = SilenceConfig(missed_intervals=2)
        beat = record_heartbeat(Heartbeat(), event("heartbeat", 10, heartbeat_interval_s=5.0))
        beat, finding = check_silence(beat, 19 * S, config)
        assert finding is None
        beat, finding = check_silence(beat, 21 * S, config)
        assert finding is not None and finding.detector == "silent_agent"
        _, finding = check_silence(beat, 40 * S, config)
        assert finding is None, "reported once per silence"

    def test_a_finished_task_is_not_silence(self) -> None:
        beat = record_heartbeat(Heartbeat(), event("task_start", 10, heartbeat_interval_s=1.0))
        beat = record_heartbeat(beat, event("task_end", 11))
        _, finding = check_silence(beat, 100 * S, SilenceConfig())
        assert finding is None

    def test_an_agent_that_never_promised_heartbeats_is_not_checked(self) -> None:
        beat = record_heartbeat(Heartbeat(), event("step_start", 10))
        _, finding = check_silence(beat, 1000 * S, SilenceConfig())
        assert finding is None


class TestCascade:
    def test_failures_in_two_agents_of_a_chain_are_one_incident_with_a_root_cause(self) -> None:
        config = CascadeConfig(min_agents=2, window_s=60)
        root = event("error", 5, agent_id="planner", task_id="t-plan", error_type="Timeout")
        child = event(
            "error",
            6,
            agent_id="executor",
            task_id="t-exec",
            parent_task_id="t-plan",
            error_type="BadInput",
        )
        state, findings = detect_cascade(ChainFailures(), root, "Timeout", config)
        assert findings == []
        state, findings = detect_cascade(state, child, "BadInput", config)
        assert len(findings) == 1 and findings[0].scope == "chain"
        assert findings[0].root_cause_event_id == root["event_id"]
        assert "Timeout in planner" in findings[0].detail

    def test_the_ancestor_is_the_root_cause_even_if_a_child_failed_first(self) -> None:
        config = CascadeConfig()
        parent_link = event(
            "step_start", 1, agent_id="worker", task_id="t-child", parent_task_id="t-root"
        )
        state, _ = detect_cascade(ChainFailures(), parent_link, None, config)
        child = event("error", 2, agent_id="worker", task_id="t-child")
        root = event("error", 3, agent_id="boss", task_id="t-root")
        state, _ = detect_cascade(state, child, "child error", config)
        _, findings = detect_cascade(state, root, "root error", config)
        assert findings[0].root_cause_event_id == root["event_id"]

    def test_one_agent_failing_twice_is_not_a_cascade(self) -> None:
        state, config = ChainFailures(), CascadeConfig()
        for at in (1, 2, 3):
            state, findings = detect_cascade(state, event("error", at), "e", config)
            assert findings == []
