"""Re-keyed events travel in bounded batches, in order, to their key's partition."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from app.worker import _chunks, _partition_of


def test_chunks_keep_order_and_stay_under_the_bound() -> None:
    values = [bytes([i]) * 100 for i in range(25)]
    chunks = _chunks(values, 1000)
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [v for c in chunks for v in c] == values


def test_a_value_larger_than_the_bound_travels_alone() -> None:
    assert _chunks([b"a", b"x" * 5000, b"b"], 1000) == [[b"a"], [b"x" * 5000], [b"b"]]
    assert _chunks([], 1000) == []


@given(st.text(min_size=1), st.integers(min_value=1, max_value=64))
def test_an_event_goes_to_the_partition_its_key_would_pick(key: str, partitions: int) -> None:
    # Tables are written to the partition of the record that carried the event, so
    # a record must land where the producer would have put the event's own key.
    every = list(range(partitions))
    assert _partition_of(key, partitions) == DefaultPartitioner()(key.encode(), every, every)
