"""Timeout: cancels and awaits the inner call, raises TimeoutExceeded, yields to the caller."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from resilient import Event, TimedOut, Timeout, TimeoutExceeded, current_context
from resilient._time import now

pytestmark = pytest.mark.anyio


async def test_fast_call_returns_its_value() -> None:
    """A call that finishes in time returns its value."""

    async def quick() -> int:
        await anyio.sleep(0.5)
        return 7

    assert await Timeout(1.0).call(quick) == 7


async def test_slow_call_is_cancelled_and_awaited_before_the_error() -> None:
    """The inner call is cancelled at the limit, its cleanup runs, then TimeoutExceeded."""
    events: list[Event] = []
    cleaned_at: list[float] = []
    start = now()

    async def slow() -> None:
        try:
            await anyio.sleep(100)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(1)  # slow cleanup, still awaited
                cleaned_at.append(now() - start)

    with pytest.raises(TimeoutExceeded) as info:
        await Timeout(5.0, name="t", observers=[events.append]).call(slow)
    assert isinstance(info.value, TimeoutError)
    assert info.value.seconds == 5.0
    assert cleaned_at == pytest.approx([6.0])
    assert now() - start == pytest.approx(6.0)
    assert events == [TimedOut("timeout", "t", 5.0)]


async def test_caller_cancellation_wins_over_timeout() -> None:
    """An outer cancel scope expiring first propagates as cancellation, not TimeoutExceeded."""
    with anyio.move_on_after(1) as outer:
        await Timeout(5).call(anyio.sleep, 100)
    assert outer.cancelled_caught


async def test_caller_cancellation_wins_a_tie() -> None:
    """When the caller's deadline and the timeout expire in the same instant, the caller wins."""
    with anyio.move_on_after(5) as outer:
        await Timeout(5).call(anyio.sleep, 100)
    assert outer.cancelled_caught


async def test_errors_of_the_inner_call_propagate() -> None:
    """An exception raised in time is not turned into a timeout."""

    async def boom() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        await Timeout(1).call(boom)


async def test_deadline_in_call_context() -> None:
    """Inside the call, ``current_context().deadline`` is the loop time at which it expires."""
    seen: list[Any] = []

    async def look() -> None:
        ctx = current_context()
        assert ctx is not None
        seen.append(ctx.deadline)

    start = now()
    await Timeout(3).call(look)
    assert seen == [pytest.approx(start + 3)]


async def test_decorator() -> None:
    """As a decorator, the timeout applies to every call."""

    @Timeout(2)
    async def wait(seconds: float) -> float:
        await anyio.sleep(seconds)
        return seconds

    assert await wait(1) == 1
    with pytest.raises(TimeoutExceeded):
        await wait(3)


@pytest.mark.parametrize("seconds", [0, -1, math.inf, math.nan, "1", True])
def test_seconds_must_be_finite_and_positive(seconds: Any) -> None:
    """``seconds`` must be a finite number > 0; the error names it."""
    with pytest.raises(ValueError, match="seconds"):
        Timeout(seconds)
