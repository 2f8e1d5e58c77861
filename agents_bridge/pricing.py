"""The price of a model call, from a per-model table the user can override."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DEFAULT_PRICES", "PriceTable"]

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    # USD per million (prompt, completion) tokens: published list prices when this
    # table was written. Prices change: override with TRC_PRICE_TABLE_FILE or
    # Monitor(prices=...); an unknown model costs None, never a guess.
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
}


class PriceTable:
    """Prices by model name; the longest matching prefix wins (``gpt-4o-2024-08-06``)."""

    def __init__(self, prices: Mapping[str, tuple[float, float]]) -> None:
        for model, pair in prices.items():
            if len(pair) != 2 or min(pair) < 0:
                raise ValueError(
                    f"price of {model!r} must be two non-negative numbers per 1M "
                    f"tokens (prompt, completion), got {pair!r}"
                )
        self._prices = dict(prices)

    @classmethod
    def load(
        cls, path: Path | None, overrides: Mapping[str, tuple[float, float]] | None = None
    ) -> PriceTable:
        """The defaults, then a JSON file ``{"model": [prompt, completion]}``, then overrides."""
        prices = dict(DEFAULT_PRICES)
        if path is not None:
            prices.update(
                {k: (float(v[0]), float(v[1])) for k, v in json.loads(path.read_text()).items()}
            )
        prices.update(overrides or {})
        return cls(prices)

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> float | None:
        if not model:
            return None
        matches = [m for m in self._prices if model == m or model.startswith(m + "-")]
        if not matches:
            return None
        prompt, completion = self._prices[max(matches, key=len)]
        return (prompt_tokens * prompt + completion_tokens * completion) / 1_000_000
