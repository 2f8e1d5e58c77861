"""What a finding means and what to do about it: pure functions.

Three categories: expected errors are recorded, recoverable anomalies alert,
runaway conditions kill. Warnings and signals never kill. Two or more
distinct detectors breaching in one task or correlation chain inside the
correlation window are an incident and escalate to a kill at once, whatever
their single categories.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.detectors._state import US, State
from app.detectors.finding import Finding
from app.policy.config import Category, PolicyConfig

__all__ = ["BreachWindow", "Decision", "decide"]

_SEVERITY: dict[Category, str] = {
    "expected_error": "info",
    "recoverable": "warning",
    "runaway": "critical",
}


@dataclass(frozen=True)
class Decision:
    category: Category
    severity: str
    kill: bool
    target_type: str
    """task | chain | agent: what a kill addresses."""
    target_id: str
    reason: str


class BreachWindow(State):
    """Recent breaches of one correlation chain: (emitted_at µs, detector, task id)."""

    breaches: tuple[tuple[int, str, str], ...] = ()


def _target(finding: Finding) -> tuple[str, str]:
    if finding.scope == "chain":
        return "chain", finding.correlation_id
    if finding.scope == "agent":
        return "agent", finding.agent_id
    return "task", finding.task_id


def decide(
    finding: Finding, policy: PolicyConfig, window: BreachWindow | None = None
) -> tuple[BreachWindow | None, Decision]:
    """Classify ``finding``; ``window`` (per chain) enables escalation of correlated breaches."""
    target_type, target_id = _target(finding)
    if finding.level == "signal":
        return window, Decision(
            "expected_error", "info", False, target_type, target_id, finding.detail
        )
    category = policy.category(finding.detector)
    if finding.level == "warning":
        return window, Decision(
            "recoverable", "warning", False, target_type, target_id, f"warning: {finding.detail}"
        )
    if window is None or category == "expected_error":
        return window, Decision(
            category,
            _SEVERITY[category],
            category == "runaway",
            target_type,
            target_id,
            finding.detail,
        )
    now = finding.trigger_emitted_at
    horizon = now - int(policy.correlation_window_s * US)
    breaches = (
        *(b for b in window.breaches if b[0] > horizon),
        (now, finding.detector, finding.task_id),
    )
    window = BreachWindow(breaches=breaches)
    detectors = sorted({b[1] for b in breaches})
    if len(detectors) >= 2:
        tasks = {b[2] for b in breaches}
        escalated_target = (
            ("task", finding.task_id) if len(tasks) == 1 else ("chain", finding.correlation_id)
        )
        return window, Decision(
            "runaway",
            "critical",
            True,
            *escalated_target,
            f"correlated breaches ({', '.join(detectors)}) within "
            f"{policy.correlation_window_s:g} s: {finding.detail}",
        )
    return window, Decision(
        category, _SEVERITY[category], category == "runaway", target_type, target_id, finding.detail
    )
