"""Base for detector state: frozen pydantic models that round-trip through JSON tables."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from app.detectors.finding import Level


class State(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Self:
        return cls.model_validate(data) if data else cls()


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


US = 1_000_000


def crossed(value: float, threshold: float, warn_fraction: float) -> Level | None:
    """'breach' at or above ``threshold``, 'warning' from ``warn_fraction`` of it."""
    if value >= threshold:
        return "breach"
    if value >= warn_fraction * threshold:
        return "warning"
    return None
