"""Tokens per second over the last minute: a window whose size does not grow with the call rate.

A task that calls its model a thousand times a minute still keeps at most
61 buckets, so summing the window costs the same for a runaway agent as for
a quiet one. Pure functions over a tuple of ``(second, tokens)``.
"""

from __future__ import annotations

from app.detectors._state import US

__all__ = ["TOKEN_WINDOW_S", "Buckets", "add_tokens", "tokens_in_window"]

TOKEN_WINDOW_S = 60
"""The window of a burn rate: tokens per minute."""

Buckets = tuple[tuple[int, int], ...]
"""(second since the epoch, tokens used in it), oldest first."""


def add_tokens(buckets: Buckets, at_us: int, tokens: int) -> Buckets:
    """``buckets`` with ``tokens`` used at ``at_us``, and seconds past the window dropped."""
    second = at_us // US
    kept = {s: n for s, n in buckets if s > second - TOKEN_WINDOW_S}
    kept[second] = kept.get(second, 0) + tokens
    return tuple(sorted(kept.items()))


def tokens_in_window(buckets: Buckets, now_us: int) -> int:
    """Tokens used in the last :data:`TOKEN_WINDOW_S` seconds before ``now_us``. Seconds
    after ``now_us`` count too: the fleet view asks with the worker's clock, and an
    agent's clock a little ahead must not hide its latest tokens."""
    horizon = now_us // US - TOKEN_WINDOW_S
    return sum(n for s, n in buckets if s > horizon)
