"""Step count per task: warn, then kill, past what the agent type normally needs."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from app.detectors._state import Config, State
from app.detectors.finding import Finding, Level

__all__ = ["StepConfig", "StepState", "detect_steps"]


class StepConfig(Config):
    warn: int = Field(20, ge=1, description="steps that raise a warning")
    kill: int = Field(35, ge=1, description="steps that are a runaway")

    @model_validator(mode="after")
    def _warn_below_kill(self) -> StepConfig:
        if self.warn >= self.kill:
            raise ValueError(f"warn ({self.warn}) must be below kill ({self.kill})")
        return self


class StepState(State):
    steps: int = 0
    reported: frozenset[str] = frozenset()


def detect_steps(
    state: StepState, event: dict[str, Any], config: StepConfig
) -> tuple[StepState, list[Finding]]:
    if event.get("event_type") != "step_start":
        return state, []
    steps = state.steps + 1
    level: Level | None = (
        "breach" if steps >= config.kill else "warning" if steps >= config.warn else None
    )
    if level is None or level in state.reported:
        return state.model_copy(update={"steps": steps}), []
    threshold = config.kill if level == "breach" else config.warn
    finding = Finding.for_event(
        event,
        "step_count",
        f"{steps} steps (warn at {config.warn}, kill at {config.kill})",
        level=level,
        value=steps,
        threshold=threshold,
    )
    return StepState(steps=steps, reported=state.reported | {level}), [finding]
