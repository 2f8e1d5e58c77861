"""The detection engine: every detector folded over one event, then the policy.

Pure functions over explicit state; the Faust worker only loads the states
from its tables, calls these, stores the results and acts on the decisions.

* :func:`process_chain_event` runs on the stream keyed by correlation id, with
  the task's state, the chain's state and the tool's latency baseline.
* :func:`process_agent_event` runs on the stream keyed by agent id (budgets per
  agent, heartbeats); :func:`check_agent` is the timer's silence check.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from app.detectors._state import State
from app.detectors.budget import BudgetState, detect_budget
from app.detectors.cascade import ChainFailures, detect_cascade
from app.detectors.duration import DurationState, detect_duration
from app.detectors.finding import Finding
from app.detectors.latency import SpikeWindow, ToolBaseline, detect_latency
from app.detectors.loop import LoopWindow, detect_loop
from app.detectors.malformed import MalformedState, detect_malformed
from app.detectors.retries import RetryState, detect_retries
from app.detectors.silence import Heartbeat, check_silence, record_heartbeat
from app.detectors.steps import StepState, detect_steps
from app.detectors.tokens import TokenState, detect_tokens
from app.detectors.tool_stages import is_outcome
from app.policy.config import PolicyConfig
from app.policy.decide import BreachWindow, Decision, decide

__all__ = [
    "AgentState",
    "ChainState",
    "Outcome",
    "TaskState",
    "check_agent",
    "process_agent_event",
    "process_chain_event",
]

_DEDUP_MEMORY = 64
"""Event ids remembered per task: covers the replay of one uncommitted ingest batch."""


class TaskState(State):
    seen: tuple[str, ...] = ()
    """Recent event ids: a redelivered event is ignored by every detector."""
    loop: LoopWindow = LoopWindow()
    tokens: TokenState = TokenState()
    spikes: SpikeWindow = SpikeWindow()
    steps: StepState = StepState()
    budget: BudgetState = BudgetState()
    retries: RetryState = RetryState()
    duration: DurationState = DurationState()
    malformed: MalformedState = MalformedState()


class ChainState(State):
    failures: ChainFailures = ChainFailures()
    breaches: BreachWindow = BreachWindow()
    killed: frozenset[str] = frozenset()
    """Kill targets already commanded in this chain: one command per target."""


class AgentState(State):
    seen: tuple[str, ...] = ()
    heartbeat: Heartbeat = Heartbeat()
    budget: BudgetState = BudgetState()


@dataclass(frozen=True)
class Outcome:
    finding: Finding
    decision: Decision


def _failure(event: dict[str, Any]) -> str | None:
    if event.get("event_type") == "error" or event.get("status") == "error":
        what = event.get("error_type") or "error"
        tool = event.get("tool_name")
        return f"{what} in tool {tool!r}" if tool else what
    return None


def process_chain_event(
    task: TaskState,
    chain: ChainState,
    baseline: ToolBaseline,
    event: dict[str, Any],
    policy: PolicyConfig,
) -> tuple[TaskState, ChainState, ToolBaseline, list[Outcome]]:
    """Fold ``event`` into its task, chain and tool baseline; decide on every finding.

    The chain and the baseline come back as the same objects when the event did
    not change them, so the caller can skip writing them; the task comes back as
    the same object only when its event id was seen already (a duplicate)."""
    if event["event_id"] in task.seen:
        return task, chain, baseline, []
    warn = policy.warn_fraction
    loop, loop_finding = detect_loop(task.loop, event, policy.loop)
    tokens, token_findings = detect_tokens(task.tokens, event, policy.tokens, warn)
    baseline, spikes, latency_findings = detect_latency(
        baseline, task.spikes, event, policy.latency
    )
    steps, step_findings = detect_steps(task.steps, event, policy.steps)
    budget, budget_findings = detect_budget(task.budget, event, policy.budget, warn, "task")
    retries, retry_findings = detect_retries(task.retries, event, policy.retries)
    duration, duration_findings = detect_duration(task.duration, event, policy.duration, warn)
    malformed, malformed_findings = detect_malformed(task.malformed, event)
    findings = [
        *([loop_finding] if loop_finding else []),
        *token_findings,
        *latency_findings,
        *step_findings,
        *budget_findings,
        *retry_findings,
        *duration_findings,
        *malformed_findings,
    ]
    failure = _failure(event)
    if failure and is_outcome(event):
        findings.append(Finding.for_event(event, "tool_error", failure, level="signal"))
    breach = next((f for f in findings if f.level == "breach"), None)
    cascade_input = failure or (f"anomaly {breach.detector}" if breach else None)
    failures, cascade_findings = detect_cascade(
        chain.failures, event, cascade_input, policy.cascade
    )
    findings += cascade_findings
    outcomes = []
    breaches: BreachWindow | None = chain.breaches
    killed = set(chain.killed)
    for finding in findings:
        breaches, decision = decide(finding, policy, breaches)
        if decision.kill:
            target = f"{decision.target_type}:{decision.target_id}"
            if target in killed:
                decision = dataclasses.replace(decision, kill=False)  # already commanded
            killed.add(target)
        outcomes.append(Outcome(finding, decision))
    # Every part was built by its detector: construct without validating it all again.
    task = TaskState.model_construct(
        seen=(*task.seen, event["event_id"])[-_DEDUP_MEMORY:],
        loop=loop,
        tokens=tokens,
        spikes=spikes,
        steps=steps,
        budget=budget,
        retries=retries,
        duration=duration,
        malformed=malformed,
    )
    if failures is not chain.failures or breaches is not chain.breaches or killed != chain.killed:
        chain = ChainState.model_construct(
            failures=failures, breaches=breaches or BreachWindow(), killed=frozenset(killed)
        )
    return task, chain, baseline, outcomes


def process_agent_event(
    agent: AgentState, event: dict[str, Any], policy: PolicyConfig
) -> tuple[AgentState, list[Outcome]]:
    """Heartbeat bookkeeping and the agent's windowed budget."""
    if event["event_id"] in agent.seen:
        return agent, []
    budget, findings = detect_budget(
        agent.budget, event, policy.budget, policy.warn_fraction, "agent"
    )
    outcomes = [Outcome(f, decide(f, policy)[1]) for f in findings]
    state = AgentState(
        seen=(*agent.seen, event["event_id"])[-_DEDUP_MEMORY:],
        heartbeat=record_heartbeat(agent.heartbeat, event),
        budget=budget,
    )
    return state, outcomes


def check_agent(
    agent: AgentState, now_us: int, policy: PolicyConfig
) -> tuple[AgentState, list[Outcome]]:
    """The timer's check: a silent agent raises an alert without any new event."""
    heartbeat, finding = check_silence(agent.heartbeat, now_us, policy.silence)
    if finding is None:
        return agent, []
    return agent.model_copy(update={"heartbeat": heartbeat}), [
        Outcome(finding, decide(finding, policy)[1])
    ]
