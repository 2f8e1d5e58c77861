"""Re-keyed events travel in bounded batches, in order."""

from __future__ import annotations

from app.worker import _chunks


def test_chunks_keep_order_and_stay_under_the_bound() -> None:
    values = [bytes([i]) * 100 for i in range(25)]
    chunks = _chunks(values, 1000)
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [v for c in chunks for v in c] == values


def test_a_value_larger_than_the_bound_travels_alone() -> None:
    assert _chunks([b"a", b"x" * 5000, b"b"], 1000) == [[b"a"], [b"x" * 5000], [b"b"]]
    assert _chunks([], 1000) == []
