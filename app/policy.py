"""Policy: what a finding means and what to do about it. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.detectors.finding import Finding

__all__ = ["Category", "Decision", "decide"]


class Category(StrEnum):
    EXPECTED_ERROR = "expected_error"  # record only
    RECOVERABLE = "recoverable"  # alert
    RUNAWAY = "runaway"  # kill


@dataclass(frozen=True)
class Decision:
    category: Category
    severity: str
    kill: bool


# Which category each detector's findings fall into. Only runaway conditions kill.
_CATEGORY_BY_DETECTOR: dict[str, Category] = {
    "reasoning_loop": Category.RUNAWAY,
}

_SEVERITY = {
    Category.EXPECTED_ERROR: "info",
    Category.RECOVERABLE: "warning",
    Category.RUNAWAY: "critical",
}


def decide(finding: Finding) -> Decision:
    """Classify ``finding``; unknown detectors are alerts, never automatic kills."""
    category = _CATEGORY_BY_DETECTOR.get(finding.detector, Category.RECOVERABLE)
    return Decision(category, _SEVERITY[category], kill=category is Category.RUNAWAY)
