"""Canonical JSON for tool arguments: equal meaning gives equal bytes and hash."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

__all__ = ["args_hash", "canonical_json"]


def canonical_json(args: Any) -> str:
    """Key order and whitespace removed; a JSON string argument is parsed first.

    Raises ``TypeError`` naming the offending type when ``args`` holds a value
    JSON cannot represent.
    """
    if isinstance(args, str | bytes):
        with contextlib.suppress(ValueError):  # a plain string is canonical as it is
            args = json.loads(args)
    try:
        return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except TypeError as exc:
        raise TypeError(f"tool arguments must be JSON-serialisable: {exc}") from exc


def args_hash(args: Any) -> str:
    """sha256 hex digest of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(args).encode()).hexdigest()
