"""The live policy: re-read when its file changes, without a restart."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from app.policy.config import PolicyError, PolicyFile, load_policy

__all__ = ["PolicyStore"]

_log = logging.getLogger(__name__)


class PolicyStore:
    """Holds the current :class:`PolicyFile`; checks the file's mtime at most once a second.

    A bad file at start is an error. A bad edit later keeps the last good
    policy, logs the problem (key and allowed values) and counts it.
    """

    def __init__(self, path: Path | None, check_interval_s: float = 1.0) -> None:
        self.path = path
        self._interval = check_interval_s
        self._policy = load_policy(path)
        self._mtime = self._stat()
        self._checked = time.monotonic()
        self.reloads = 0
        self.rejected_reloads = 0
        self.last_error: str | None = None

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns if self.path else None
        except FileNotFoundError:
            return None

    def current(self) -> PolicyFile:
        if self.path is not None and time.monotonic() - self._checked >= self._interval:
            self._checked = time.monotonic()
            self.reload_if_changed()
        return self._policy

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True when a new policy is in force."""
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            self._policy = load_policy(self.path)
        except PolicyError as exc:
            self.rejected_reloads += 1
            self.last_error = str(exc)
            _log.error("policy change rejected, keeping the previous policy: %s", exc)
            return False
        self.reloads += 1
        self.last_error = None
        _log.warning("policy reloaded from %s", self.path)
        return True
