"""A log filter that keeps an outage from flooding the agent's logs.

While the broker is down the sender retries every half second, and each try
logged a warning (and aiokafka an error): thousands of lines an hour in the
logs of every agent process. Through this filter a message (by its format
string) is written the first time and then at most once per interval, with
how many like it were held back. A record passed by one such filter (the
sender's logger) is not counted again by another (the sender process's handler).
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["RepeatLimit"]

_LIMITED = "trc_repeat_limited"
_MAX_TEMPLATES = 1_000


class RepeatLimit(logging.Filter):
    """Passes each message template once per ``every_s`` seconds and counts the rest."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._lock = threading.Lock()
        self._passed: dict[str, tuple[float, int]] = {}
        """Template -> (when it last passed, how many were held back since)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _LIMITED, False):
            return True
        template = str(record.msg)
        now = time.monotonic()
        with self._lock:
            last, held = self._passed.get(template, (-self.every_s, 0))
            if now - last < self.every_s:
                self._passed[template] = (last, held + 1)
                return False
            if len(self._passed) >= _MAX_TEMPLATES:  # messages formatted before logging
                self._passed.clear()
            self._passed[template] = (now, 0)
        setattr(record, _LIMITED, True)
        if held:
            record.msg = f"{template} ({held} more like this in the last {now - last:.0f} s)"
        return True
