"""The policy file: detector thresholds, categories, and per-agent-type overrides.

A TOML file with a ``[defaults]`` table and ``[agent_types.<type>]`` tables
that override any part of it::

    [defaults]
    warn_fraction = 0.8
    [defaults.steps]
    warn = 20
    kill = 35

    [agent_types.support-bot.steps]
    warn = 12
    kill = 18
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.detectors.budget import BudgetConfig
from app.detectors.cascade import CascadeConfig
from app.detectors.duration import DurationConfig
from app.detectors.latency import LatencyConfig
from app.detectors.loop import LoopConfig
from app.detectors.retries import RetryConfig
from app.detectors.silence import SilenceConfig
from app.detectors.steps import StepConfig
from app.detectors.tokens import TokenConfig

__all__ = ["Category", "PolicyConfig", "PolicyError", "PolicyFile", "load_policy"]

Category = Literal["expected_error", "recoverable", "runaway"]


def _default_categories() -> dict[str, Category]:
    return {
        "reasoning_loop": "runaway",
        "token_growth": "recoverable",
        "token_rate": "recoverable",
        "latency_spike": "recoverable",
        "step_count": "runaway",
        "task_budget": "runaway",
        "agent_budget": "runaway",
        "retry_storm": "runaway",
        "task_duration": "recoverable",
        "silent_agent": "recoverable",
        "cascade": "recoverable",
        "malformed_response": "recoverable",
        "tool_error": "expected_error",
    }


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the key and what is allowed."""


class PolicyConfig(BaseModel):
    """Everything the detectors and the policy need for one agent type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warn_fraction: float = Field(0.8, gt=0, lt=1, description="warn at this fraction of a limit")
    correlation_window_s: float = Field(
        300.0, gt=0, description="distinct breaches in one task or chain within it escalate"
    )
    categories: dict[str, Category] = Field(default_factory=_default_categories)
    loop: LoopConfig = LoopConfig()
    tokens: TokenConfig = TokenConfig()
    latency: LatencyConfig = LatencyConfig()
    steps: StepConfig = StepConfig()
    budget: BudgetConfig = BudgetConfig()
    retries: RetryConfig = RetryConfig()
    duration: DurationConfig = DurationConfig()
    silence: SilenceConfig = SilenceConfig()
    cascade: CascadeConfig = CascadeConfig()

    def category(self, detector: str) -> Category:
        """Unknown detectors alert; they never kill on their own."""
        return self.categories.get(detector, "recoverable")


class PolicyFile(BaseModel):
    """Defaults plus resolved per-agent-type policies."""

    model_config = ConfigDict(frozen=True)

    defaults: PolicyConfig = PolicyConfig()
    agent_types: dict[str, PolicyConfig] = {}

    def for_agent_type(self, agent_type: str | None) -> PolicyConfig:
        return self.agent_types.get(agent_type or "", self.defaults)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _explain(exc: ValidationError, prefix: str, source: str) -> PolicyError:
    lines = []
    for error in exc.errors():
        key = ".".join([prefix, *(str(p) for p in error["loc"])]).strip(".")
        allowed = ""
        if error["type"] == "literal_error":
            allowed = f" (allowed: {error['ctx']['expected']})"
        elif error["type"] == "extra_forbidden":
            allowed = " (unknown key: check the spelling against the documented keys)"
        lines.append(f"{key} = {error.get('input')!r}: {error['msg']}{allowed}")
    return PolicyError(f"invalid policy {source}:\n  " + "\n  ".join(lines))


def parse_policy(data: dict[str, Any], source: str = "file") -> PolicyFile:
    """Validate a parsed policy document; raise :class:`PolicyError` naming each bad key."""
    unknown = set(data) - {"defaults", "agent_types"}
    if unknown:
        raise PolicyError(
            f"invalid policy {source}: unknown top-level key(s) {sorted(unknown)} "
            "(allowed: defaults, agent_types)"
        )
    raw_defaults = data.get("defaults", {})
    try:
        defaults = PolicyConfig.model_validate(raw_defaults)
    except ValidationError as exc:
        raise _explain(exc, "defaults", source) from None
    types: dict[str, PolicyConfig] = {}
    for name, override in (data.get("agent_types") or {}).items():
        try:
            types[name] = PolicyConfig.model_validate(_merge(defaults.model_dump(), override))
        except ValidationError as exc:
            raise _explain(exc, f"agent_types.{name}", source) from None
    return PolicyFile(defaults=defaults, agent_types=types)


def load_policy(path: Path | None) -> PolicyFile:
    """Read ``path`` (TOML); no path means the built-in defaults."""
    if path is None:
        return PolicyFile()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist (set TRC_POLICY_FILE)") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from None
    return parse_policy(data, str(path))
