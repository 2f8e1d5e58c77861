"""Token-set similarity of tool arguments without sending the arguments.

The agent side reduces the words of the arguments to a bottom-k MinHash
sketch (the k smallest 63-bit word hashes); the cluster estimates the Jaccard
similarity of two argument sets from their sketches alone. Hand-written
because it is twenty lines, and the usual library (datasketch) would pull
NumPy into every agent worker.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["SKETCH_SIZE", "estimate_jaccard", "sketch"]

SKETCH_SIZE = 32
_WORD = re.compile(r"\w+")


def _hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big") >> 1


def sketch(text: str, k: int = SKETCH_SIZE) -> list[int]:
    """The k smallest hashes of the distinct lower-cased words of ``text``, sorted."""
    return sorted({_hash(word) for word in _WORD.findall(text.casefold())})[:k]


def estimate_jaccard(a: list[int], b: list[int], k: int = SKETCH_SIZE) -> float:
    """Estimated Jaccard similarity (intersection over union) of the word sets behind
    sketches ``a`` and ``b``."""
    if not a or not b:
        return 1.0 if a == b else 0.0
    union_bottom = sorted(set(a) | set(b))[:k]
    in_both = set(a) & set(b)
    return sum(1 for h in union_bottom if h in in_both) / len(union_bottom)
