"""The shared-memory ring between an agent and its sender process (one process here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents_bridge._shared_ring import SharedRing


@pytest.fixture
def ring() -> Iterator[SharedRing]:
    ring = SharedRing.create(4096)
    yield ring
    ring.close()


def test_frames_come_out_in_order_and_free_their_space(ring: SharedRing) -> None:
    bodies = [bytes([i]) * (10 + i) for i in range(20)]
    for body in bodies:
        assert ring.put(body)
    assert ring.take() == bodies
    assert ring.take() == []
    # Everything was taken: the whole ring is free again, many times over.
    for round_ in range(50):
        assert ring.put(b"x" * 1000), f"round {round_}: the space taken was not freed"
        assert ring.take() == [b"x" * 1000]


def test_a_full_ring_refuses_until_the_reader_takes(ring: SharedRing) -> None:
    accepted = 0
    while ring.put(b"y" * 100):
        accepted += 1
    assert 30 <= accepted <= 40  # 4096 bytes / 112-byte frames, less the wrap
    assert len(ring.take()) == accepted
    assert ring.put(b"y" * 100)


def test_a_frame_that_does_not_fit_before_the_end_wraps_whole(ring: SharedRing) -> None:
    assert ring.put(b"a" * 3000)
    assert ring.take() == [b"a" * 3000]
    assert ring.put(b"b" * 900)  # the rest of the data area: fits before the end
    assert ring.put(b"c" * 900)  # would straddle the end: skipped to the start
    assert ring.take() == [b"b" * 900, b"c" * 900]


def test_the_asleep_flag_is_shared(ring: SharedRing) -> None:
    other_view = SharedRing(ring.fd)
    ring.set_asleep(True)
    assert other_view.reader_asleep
    other_view.set_asleep(False)
    assert not ring.reader_asleep


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.booleans()), max_size=300))
def test_any_interleaving_delivers_every_accepted_frame_once_in_order(
    steps: list[tuple[int, bool]],
) -> None:
    ring = SharedRing.create(4096)
    try:
        accepted: list[bytes] = []
        taken: list[bytes] = []
        for number, (size, take_now) in enumerate(steps):
            body = number.to_bytes(4, "little") * (size // 4 + 1)
            if ring.put(body):
                accepted.append(body)
            if take_now:
                taken += ring.take()
        taken += ring.take()
        assert taken == accepted
    finally:
        ring.close()
