"""CountWindow and TimeWindow: exact running totals, expiry bounds, O(1) records, fixed memory."""

from __future__ import annotations

import sys
from array import array
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import CountWindow, TimeWindow

flags = st.tuples(st.booleans(), st.booleans())


def totals(window: CountWindow | TimeWindow) -> tuple[int, int, int]:
    return window.calls, window.failed, window.slow


@given(size=st.integers(1, 12), outcomes=st.lists(flags, max_size=60))
def test_count_window_totals_are_the_last_n_outcomes(
    size: int, outcomes: list[tuple[bool, bool]]
) -> None:
    """After every record, the totals equal those of the last ``size`` outcomes."""
    window = CountWindow(size)
    for i, (failed, slow) in enumerate(outcomes):
        window.record(failed, slow, None)
        last = outcomes[max(0, i + 1 - size) : i + 1]
        assert totals(window) == (len(last), sum(f for f, _ in last), sum(s for _, s in last))


@given(
    size=st.integers(1, 12),
    before=st.lists(flags, max_size=40),
    after=st.lists(flags, max_size=20),
)
def test_advancing_over_the_successes_ahead_is_recording_them(
    size: int, before: list[tuple[bool, bool]], after: list[tuple[bool, bool]]
) -> None:
    """``advance(successes_ahead())`` leaves the window as recording that many successes
    would: same totals now, and the same totals after any later outcomes."""
    recorded, advanced = CountWindow(size), CountWindow(size)
    for failed, slow in before:
        recorded.record(failed, slow, None)
        advanced.record(failed, slow, None)
    ahead = recorded.successes_ahead()
    assert 0 <= ahead <= size
    for _ in range(ahead):
        assert recorded.record(False, False, None) is False
        assert totals(recorded) == totals(advanced)  # a success over a success
    advanced.advance(ahead)
    for failed, slow in after + [(False, False)] * size:
        recorded.record(failed, slow, None)
        advanced.record(failed, slow, None)
        assert totals(recorded) == totals(advanced)


def test_record_says_when_a_rate_may_have_risen() -> None:
    """record() is true for a failed or slow outcome, or after expiry dropped outcomes."""
    count = CountWindow(2)
    assert [
        count.record(f, s, None) for f, s in [(False, False), (True, False), (False, True)]
    ] == [
        False,
        True,
        True,
    ]
    assert count.record(False, False, None) is False  # evicting only lowers the rates
    timed = TimeWindow(2.0)
    assert timed.record(False, False, 0.0) is False
    assert timed.record(True, False, 0.5) is True
    assert timed.record(False, False, 1.0) is False
    timed.expire(3.0)  # bucket 0 (the failure among them) expires
    assert timed.record(False, False, 3.0) is True
    assert timed.record(False, False, 3.5) is False


def test_count_window_clear_and_fresh() -> None:
    """``clear`` empties the window; ``fresh`` is a new empty window of the same size."""
    window = CountWindow(3)
    for _ in range(5):
        window.record(True, True, None)
    assert totals(window) == (3, 3, 3)
    copy = window.fresh()
    assert (copy.size, totals(copy)) == (3, (0, 0, 0))
    window.clear()
    assert totals(window) == (0, 0, 0)
    window.record(False, True, None)
    assert totals(window) == (1, 0, 1)
    assert window.capacity == 3
    assert repr(window) == "CountWindow(3)"


def test_count_window_memory_is_fixed() -> None:
    """A count window's ring does not grow with traffic."""
    window = CountWindow(100)
    before = sys.getsizeof(window._ring)
    for i in range(10_000):
        window.record(i % 3 == 0, i % 5 == 0, None)
    assert sys.getsizeof(window._ring) == before
    assert window.calls == 100


def expected_time_totals(
    events: list[tuple[float, bool, bool]], now: float, seconds: float, bucket: float
) -> tuple[int, int, int]:
    """The documented rule: bucket i counts until ``now >= (i+1)*bucket + seconds``."""
    live = [e for e in events if now < (int(e[0] // bucket) + 1) * bucket + seconds]
    return len(live), sum(e[1] for e in live), sum(e[2] for e in live)


@given(
    spec=st.sampled_from([(5.0, 1.0), (2.0, 0.5), (3.0, 3.0), (2.5, 1.0), (10.0, 2.0)]),
    steps=st.lists(
        st.tuples(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 4.5, 11.0, 3600.0]), flags),
        max_size=60,
    ),
    start=st.sampled_from([0.0, 7.25, 1e6]),
)
def test_time_window_totals_follow_the_bucket_rule(
    spec: tuple[float, float],
    steps: list[tuple[float, tuple[bool, bool]]],
    start: float,
) -> None:
    """Totals match the bucket rule after every record and every read, and respect the bounds."""
    seconds, bucket = spec
    window = TimeWindow(seconds, bucket=bucket)
    now = start
    events: list[tuple[float, bool, bool]] = []
    for dt, (failed, slow) in steps:
        now += dt
        window.expire(now)
        assert totals(window) == expected_time_totals(events, now, seconds, bucket)
        window.record(failed, slow, now)
        events.append((now, failed, slow))
        assert totals(window) == expected_time_totals(events, now, seconds, bucket)
        # The contract's bounds: younger than `seconds` counts, `seconds + bucket` old is gone.
        younger = sum(1 for e in events if now - e[0] < seconds)
        not_gone = sum(1 for e in events if now - e[0] < seconds + bucket)
        assert younger <= window.calls <= not_gone


def test_time_window_forgets_outcomes_older_than_the_window() -> None:
    """Outcomes stop counting once older than the window plus one bucket."""
    window = TimeWindow(10.0)
    window.record(True, False, 100.0)
    window.record(False, True, 104.0)
    window.expire(109.9)
    assert totals(window) == (2, 1, 1)
    window.expire(111.0)  # 100.0 is 11 s old: gone; 104.0 still counts
    assert totals(window) == (1, 0, 1)
    window.expire(115.0)
    assert totals(window) == (0, 0, 0)


class CountingArray(array):  # type: ignore[type-arg]
    """An ``array('I')`` that counts how often its items are read or written."""

    touched = 0

    def __getitem__(self, i: Any) -> Any:
        CountingArray.touched += 1
        return super().__getitem__(i)

    def __setitem__(self, i: Any, v: Any) -> None:
        CountingArray.touched += 1
        super().__setitem__(i, v)


@pytest.mark.parametrize("gap", [3600.0, 1e6])
def test_time_window_idle_gap_costs_buckets_not_seconds(gap: float) -> None:
    """An idle gap of any length clears the window touching each bucket at most a few times."""
    window = TimeWindow(10.0, bucket=1.0)  # 11 buckets
    for name in ("_calls", "_failed", "_slow"):
        setattr(window, name, CountingArray("I", getattr(window, name)))
    for t in range(20):  # fill every bucket
        window.record(True, t % 2 == 0, 1000.0 + t)
    CountingArray.touched = 0
    window.record(False, False, 1019.0 + gap)
    assert totals(window) == (1, 0, 0)
    # Store the filling bucket (3 writes), then read and zero 3 arrays over one lap of 11.
    assert CountingArray.touched <= 3 + 6 * 11


def test_time_window_memory_is_fixed() -> None:
    """A time window's buckets do not grow with traffic."""
    window = TimeWindow(60.0)
    sizes = [sys.getsizeof(a) for a in (window._calls, window._failed, window._slow)]
    for i in range(20_000):
        window.record(i % 2 == 0, False, i * 0.01)
    assert [sys.getsizeof(a) for a in (window._calls, window._failed, window._slow)] == sizes
    assert len(window._calls) == 61


def test_time_window_clear_fresh_repr() -> None:
    """``clear`` and ``fresh`` give empty windows; ``capacity`` is None; repr shows the spec."""
    window = TimeWindow(5.0, bucket=0.5)
    window.record(True, True, 1.0)
    window.record(True, False, 2.0)
    assert window.fresh().calls == 0
    window.clear()
    assert totals(window) == (0, 0, 0)
    window.record(False, False, 3.0)
    assert totals(window) == (1, 0, 0)
    assert window.capacity is None
    assert repr(window) == "TimeWindow(5.0, bucket=0.5)"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: CountWindow(0), "size must be an int >= 1, got 0"),
        (lambda: CountWindow(2.5), "size"),  # type: ignore[arg-type]
        (lambda: TimeWindow(0), "seconds .* got 0"),
        (lambda: TimeWindow(float("inf")), "seconds"),
        (lambda: TimeWindow(5, bucket=0), "bucket .* got 0"),
        (lambda: TimeWindow(5, bucket=6), "bucket must be <= seconds"),
        (lambda: TimeWindow(1e9, bucket=1), "seconds / bucket"),
    ],
)
def test_window_validation(build: Any, match: str) -> None:
    """A bad window configuration raises ValueError naming the argument and the value."""
    with pytest.raises(ValueError, match=match):
        build()
