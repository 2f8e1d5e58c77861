"""Token blow-ups: a step much costlier than the one before, or a task burning too fast."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.detectors._state import Config, State, crossed
from app.detectors.finding import Finding
from app.detectors.token_buckets import Buckets, add_tokens, tokens_in_window

__all__ = ["TokenConfig", "TokenState", "detect_tokens"]


class TokenConfig(Config):
    growth_factor: float = Field(3.0, gt=1, description="step N tokens / step N-1 tokens")
    min_step_tokens: int = Field(200, ge=0, description="smaller previous steps are not compared")
    tokens_per_minute: int = Field(50_000, gt=0, description="task burn-rate budget")


class TokenState(State):
    step: int = -1
    step_tokens: int = 0
    previous_step_tokens: int | None = None
    per_second: Buckets = ()
    """Tokens of the last minute's LLM calls, per second (bounded however fast they come)."""
    reported: frozenset[str] = frozenset()


def detect_tokens(
    state: TokenState, event: dict[str, Any], config: TokenConfig, warn_fraction: float
) -> tuple[TokenState, list[Finding]]:
    """Fold an ``llm_call`` event in; other events pass through."""
    if event.get("event_type") != "llm_call":
        return state, []
    tokens = int(event.get("prompt_tokens") or 0) + int(event.get("completion_tokens") or 0)
    now, step = event["emitted_at"], int(event.get("step_index") or 0)
    if step != state.step:
        previous = state.step_tokens if state.step >= 0 else None
        state = state.model_copy(
            update={"step": step, "step_tokens": 0, "previous_step_tokens": previous}
        )
    step_tokens = state.step_tokens + tokens
    per_second = add_tokens(state.per_second, now, tokens)
    findings: list[Finding] = []
    reported = set(state.reported)
    previous = state.previous_step_tokens
    growth_key = f"growth:{step}"
    if (
        previous is not None
        and previous >= config.min_step_tokens
        and step_tokens >= config.growth_factor * previous
        and growth_key not in reported
    ):
        reported.add(growth_key)
        findings.append(
            Finding.for_event(
                event,
                "token_growth",
                f"step {step} used {step_tokens} tokens, "
                f"{step_tokens / previous:.1f}x step {step - 1} ({previous})",
                value=step_tokens / previous,
                threshold=config.growth_factor,
            )
        )
    rate = tokens_in_window(per_second, now)
    level = crossed(rate, config.tokens_per_minute, warn_fraction)
    if level is None:
        reported -= {"rate:warning", "rate:breach"}
    elif f"rate:{level}" not in reported:
        reported.add(f"rate:{level}")
        findings.append(
            Finding.for_event(
                event,
                "token_rate",
                f"{rate} tokens in the last minute (budget {config.tokens_per_minute}/min)",
                level=level,
                value=rate,
                threshold=config.tokens_per_minute,
            )
        )
    new_state = state.model_copy(
        update={
            "step_tokens": step_tokens,
            "per_second": per_second,
            "reported": frozenset(reported),
        }
    )
    return new_state, findings
