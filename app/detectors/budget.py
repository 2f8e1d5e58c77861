"""Token and cost budgets, per task and per agent per window."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.detectors._state import US, Config, State, crossed
from app.detectors.finding import Finding, Scope

__all__ = ["BudgetConfig", "BudgetState", "detect_budget"]


class BudgetConfig(Config):
    task_tokens: int = Field(500_000, gt=0)
    task_cost_usd: float = Field(10.0, gt=0)
    agent_tokens: int = Field(5_000_000, gt=0, description="per agent per window")
    agent_cost_usd: float = Field(100.0, gt=0, description="per agent per window")
    agent_window_s: float = Field(3600.0, gt=0)


class BudgetState(State):
    """Spend of one task (no window) or one agent (a rolling window)."""

    spend: tuple[tuple[int, int, float], ...] = ()
    """(minute start µs, tokens, cost) buckets; only kept for agent windows."""
    tokens: int = 0
    cost_usd: float = 0.0
    reported: frozenset[str] = frozenset()


def detect_budget(
    state: BudgetState,
    event: dict[str, Any],
    config: BudgetConfig,
    warn_fraction: float,
    scope: Scope,
) -> tuple[BudgetState, list[Finding]]:
    """``scope`` 'task' checks the task budget; 'agent' the agent's windowed budget."""
    if event.get("event_type") != "llm_call":
        return state, []
    tokens = int(event.get("prompt_tokens") or 0) + int(event.get("completion_tokens") or 0)
    cost = float(event.get("cost_usd") or 0.0)
    now = event["emitted_at"]
    if scope == "agent":
        # Per-minute buckets keep an hour-long window small.
        minute = now - now % (60 * US)
        horizon = minute - int(config.agent_window_s * US)
        kept = [s for s in state.spend if s[0] > horizon]
        if kept and kept[-1][0] == minute:
            last = kept.pop()
            kept.append((minute, last[1] + tokens, last[2] + cost))
        else:
            kept.append((minute, tokens, cost))
        spend = tuple(kept)
        total_tokens, total_cost = sum(s[1] for s in spend), sum(s[2] for s in spend)
        limits = (config.agent_tokens, config.agent_cost_usd)
    else:
        spend = ()
        total_tokens, total_cost = state.tokens + tokens, state.cost_usd + cost
        limits = (config.task_tokens, config.task_cost_usd)
    reported = set(state.reported)
    findings = []
    for name, value, limit, unit in (
        ("tokens", total_tokens, limits[0], "tokens"),
        ("cost", total_cost, limits[1], "USD"),
    ):
        level = crossed(value, limit, warn_fraction)
        key = f"{name}:{level}"
        if level is None:
            reported -= {f"{name}:warning", f"{name}:breach"}  # a window can drop back
        elif key not in reported:
            reported.add(key)
            window = f" in {config.agent_window_s:g} s" if scope == "agent" else ""
            who = f"agent {event['agent_id']}" if scope == "agent" else "task"
            findings.append(
                Finding.for_event(
                    event,
                    f"{scope}_budget",
                    f"{who} spent {value:,.2f} {unit}{window} (budget {limit:,.2f})",
                    level=level,
                    value=value,
                    threshold=limit,
                    scope=scope,
                )
            )
    new_state = BudgetState(
        spend=spend, tokens=total_tokens, cost_usd=total_cost, reported=frozenset(reported)
    )
    return new_state, findings
