"""Canonical JSON for tool arguments: equal meaning gives equal bytes and hash."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from typing import Any

__all__ = ["args_hash", "canonical_json", "normalized"]

_SPACES = re.compile(r"\s+")


def _parsed(args: Any) -> Any:
    if isinstance(args, str | bytes):
        with contextlib.suppress(ValueError):  # a plain string is canonical as it is
            return json.loads(args)
    return args


def canonical_json(args: Any) -> str:
    """Key order and whitespace removed; a JSON string argument is parsed first.

    Raises ``TypeError`` naming the offending type when ``args`` holds a value
    JSON cannot represent.
    """
    try:
        return json.dumps(_parsed(args), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tool arguments must be JSON-serialisable: {exc}") from exc


def normalized(value: Any) -> Any:
    """Values with case, inner whitespace and number format folded, at any depth:
    ``"Refund  Policy"`` is ``"refund policy"`` and ``5.0`` is ``5``. Keys are kept."""
    if isinstance(value, str):
        return _SPACES.sub(" ", value).strip().casefold()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): normalized(v) for k, v in value.items()}  # keys are names: kept
    if isinstance(value, list | tuple):
        return [normalized(v) for v in value]
    return value


def args_hash(args: Any) -> str:
    """sha256 hex digest of the canonical JSON of the :func:`normalized` arguments."""
    return hashlib.sha256(canonical_json(normalized(_parsed(args))).encode()).hexdigest()
