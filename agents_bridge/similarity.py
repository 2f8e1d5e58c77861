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
from collections.abc import Sequence

__all__ = ["SKETCH_SIZE", "estimate_jaccard", "sketch"]

SKETCH_SIZE = 32
_WORD = re.compile(r"\w+")


def _hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big") >> 1


def sketch(text: str, k: int = SKETCH_SIZE) -> list[int]:
    """The k smallest hashes of the distinct lower-cased words of ``text``, sorted."""
    return sorted({_hash(word) for word in _WORD.findall(text.casefold())})[:k]


def estimate_jaccard(a: Sequence[int], b: Sequence[int], k: int = SKETCH_SIZE) -> float:
    """Estimated Jaccard similarity (intersection over union) of the word sets behind
    sketches ``a`` and ``b``."""
    if not a or not b:
        return 0.0 if a or b else 1.0
    in_a = set(a)
    union_bottom = sorted(in_a.union(b))[:k]
    # Set operations, not a Python loop: the loop detector runs this per tool call
    # against every remembered call of the same tool.
    return len(in_a.intersection(b, union_bottom)) / len(union_bottom)
