"""Command signatures: HMAC-SHA256 with named keys, so keys can rotate.

The cluster signs every ControlCommand with its first key; agents accept a
signature by any key they hold. To rotate: give agents ``new,old``, then the
cluster ``new,old`` (it now signs with ``new``), then drop ``old`` everywhere.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

from agents_bridge.codec import Record

__all__ = ["SIGNED_FIELDS", "CommandSigner", "parse_keys"]

SIGNED_FIELDS = (
    "command_id",
    "kind",
    "target_type",
    "target_id",
    "reason",
    "issuer",
    "issued_at",
    "expires_at",
    "anomaly_id",
    "key_id",
)
"""Every field but the signature: changing any of them breaks it."""


def parse_keys(value: str) -> tuple[str, dict[str, bytes]]:
    """``'id:secret[,id:secret...]'`` -> (signing key id, all keys); ValueError names the fix."""
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        key_id, sep, secret = item.partition(":")
        if not sep or not key_id or len(secret) < 16:
            raise ValueError(
                "TRC_SIGNING_KEYS must be 'key_id:secret[,key_id:secret...]' with secrets "
                f"of 16 characters or more; got an entry starting {item[:6]!r}"
            )
        keys[key_id] = secret.encode()
        order.append(key_id)
    if not keys:
        raise ValueError("TRC_SIGNING_KEYS is empty: give at least one 'key_id:secret'")
    return order[0], keys


def _payload(command: Mapping[str, Any]) -> bytes:
    return json.dumps([command.get(name) for name in SIGNED_FIELDS], separators=(",", ":")).encode()


class CommandSigner:
    """Signs with the first key; verifies with any of them."""

    def __init__(self, keys_setting: str) -> None:
        self.key_id, self._keys = parse_keys(keys_setting)

    def sign(self, command: Record) -> Record:
        """``command`` with ``key_id`` and ``signature`` set."""
        signed = {**command, "key_id": self.key_id}
        signed["signature"] = hmac.digest(self._keys[self.key_id], _payload(signed), "sha256")
        return signed

    def rejection(self, command: Mapping[str, Any]) -> str | None:
        """Why ``command`` is not authentic (``unsigned``, ``unknown_key``, ``forged``), or None."""
        signature, key_id = command.get("signature"), command.get("key_id")
        if not signature or not key_id:
            return "unsigned"
        key = self._keys.get(key_id)
        if key is None:
            return "unknown_key"
        expected = hmac.digest(key, _payload(command), "sha256")
        return None if hmac.compare_digest(expected, signature) else "forged"
