"""Which control commands an agent process obeys, and which stay in force.

Admission: a command must be signed by a known key, unexpired, and new: one
already seen (same command_id) or older than the latest command for the same
target is a replay. Standing commands: the latest KILL or PAUSE per target
stays in force for runs that start later (a restarted executor learns it from
the compacted topic) until a RESUME or a tombstone clears it.
"""

from __future__ import annotations

import collections

from agents_bridge.codec import Record
from agents_bridge.signing import CommandSigner

__all__ = ["KINDS", "TARGET_TYPES", "CommandGate", "target_key"]

KINDS = ("KILL", "PAUSE", "RESUME", "ROLLBACK")
TARGET_TYPES = ("agent", "task", "chain", "all")
_STANDING_KINDS = ("KILL", "PAUSE")
_SEEN_MEMORY = 10_000


def target_key(target_type: str, target_id: str) -> str:
    """The compaction key of a target on ``trc.control``."""
    return f"{target_type}:{target_id}"


class CommandGate:
    """Admits authentic, fresh commands and remembers the standing ones."""

    def __init__(self, signer: CommandSigner) -> None:
        self._signer = signer
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._latest: dict[str, int] = {}
        self.standing: dict[str, Record] = {}
        """Target key -> the KILL or PAUSE in force for it."""

    def rejection(self, command: Record, now_us: int) -> str | None:
        """Why ``command`` must not be applied, or None (and then it is remembered)."""
        reason = self._signer.rejection(command)
        if reason is not None:
            return reason
        if command["kind"] not in KINDS or command["target_type"] not in TARGET_TYPES:
            return "unknown_kind"
        expires_at = command.get("expires_at")
        if expires_at is not None and expires_at <= now_us:
            return "expired"
        key = target_key(command["target_type"], command["target_id"])
        if command["command_id"] in self._seen or command["issued_at"] < self._latest.get(key, 0):
            return "replayed"
        self._seen[command["command_id"]] = None
        if len(self._seen) > _SEEN_MEMORY:
            self._seen.popitem(last=False)
        self._latest[key] = command["issued_at"]
        self._stand(key, command)
        return None

    def _stand(self, key: str, command: Record) -> None:
        if command["kind"] in _STANDING_KINDS:
            self.standing[key] = command
        elif command["kind"] == "RESUME":
            self.standing.pop(key, None)

    def clear(self, key: str) -> None:
        """A tombstone: nothing stands for ``key`` any more."""
        self.standing.pop(key, None)
