"""Wall-clock time in the units the wire uses."""

from __future__ import annotations

import time

__all__ = ["now_us"]


def now_us() -> int:
    """Microseconds since the Unix epoch."""
    return time.time_ns() // 1000
