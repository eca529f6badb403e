"""Timeout: cancels and awaits the inner call, raises TimeoutExceeded, yields to the caller."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from resilient import Event, TimedOut, Timeout, TimeoutExceeded, current_context
from resilient._time import now
from resilient.testing import VirtualTimeEventLoop

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


async def test_caller_wins_a_tie_whichever_timer_fires_first() -> None:
    """A caller's scope given the same deadline after the timeout started still wins the tie."""
    with anyio.CancelScope() as outer:

        async def fn() -> None:
            ctx = current_context()
            assert ctx is not None
            assert ctx.deadline is not None
            outer.deadline = ctx.deadline  # the caller's timer now comes second
            await anyio.sleep(100)

        await Timeout(5).call(fn)
    assert outer.cancelled_caught


async def test_scope_inside_the_call_never_swallows_the_timeout() -> None:
    """A cancel scope inside the call, with a later or the same deadline, lets the timeout out."""

    async def inner(seconds: float) -> str:
        with anyio.move_on_after(seconds):
            await anyio.sleep(100)
        return "inner scope ran out"

    for seconds in (10.0, 1.0):
        with pytest.raises(TimeoutExceeded):
            await Timeout(1).call(inner, seconds)
    # and a scope inside that runs out first is the call's own business
    assert await Timeout(1).call(inner, 0.5) == "inner scope ran out"


async def test_call_that_swallows_the_cancellation_returns_its_value() -> None:
    """A call that catches the timeout's cancellation and returns keeps its value; awaits go on."""

    async def stubborn() -> str:
        try:
            await anyio.sleep(100)
        except anyio.get_cancelled_exc_class():
            return "kept"
        return "slept"  # pragma: no cover

    start = now()
    assert await Timeout(1).call(stubborn) == "kept"
    await anyio.sleep(1)  # not cancelled: the timeout took its request back
    assert now() - start == pytest.approx(2)


def _native(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` on a bare asyncio loop in virtual time: no anyio around, native cancellation."""
    with asyncio.Runner(loop_factory=VirtualTimeEventLoop) as runner:
        runner.run(main())  # type: ignore[arg-type]


def test_native_asyncio_timeout_of_the_caller_wins_a_tie() -> None:
    """On asyncio, the caller's ``asyncio.timeout`` ending at the same instant wins, either way."""

    async def tie(caller_first: bool) -> None:
        async with asyncio.timeout(5 if caller_first else None) as outer:

            async def fn() -> None:
                ctx = current_context()
                assert ctx is not None
                if not caller_first:
                    outer.reschedule(ctx.deadline)  # pushed after the timeout's timer
                await asyncio.sleep(100)

            await Timeout(5).call(fn)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        for caller_first in (True, False):
            with pytest.raises(TimeoutError) as info:
                await tie(caller_first)
            assert not isinstance(info.value, TimeoutExceeded)
            assert task.cancelling() == 0

    _native(main)


def test_native_asyncio_task_is_left_uncancelled() -> None:
    """On asyncio, after a timeout (raised or swallowed) the task's cancel count is back to 0."""

    async def swallow() -> str:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            return "kept"
        return "slept"  # pragma: no cover

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(TimeoutExceeded):
            await Timeout(1).call(asyncio.sleep, 100)
        assert task.cancelling() == 0
        assert await Timeout(1).call(swallow) == "kept"
        assert task.cancelling() == 0
        await asyncio.sleep(1)  # no cancellation left pending

    _native(main)


def test_native_asyncio_cancel_of_the_task_propagates() -> None:
    """On asyncio, cancelling the task running a timed call propagates as CancelledError."""

    async def main() -> None:
        worker = asyncio.create_task(Timeout(5).call(asyncio.sleep, 100))
        await asyncio.sleep(1)
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker

    _native(main)


@pytest.mark.parametrize("seconds", [0, -1, math.inf, math.nan, "1", True])
def test_seconds_must_be_finite_and_positive(seconds: Any) -> None:
    """``seconds`` must be a finite number > 0; the error names it."""
    with pytest.raises(ValueError, match="seconds"):
        Timeout(seconds)


async def test_shielded_code_inside_the_call_is_not_cut_short() -> None:
    """A shielded anyio scope inside the call runs to its end; the timeout lands after it."""
    log = []

    async def fn() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(5.0)
            log.append("shielded part done")
        await anyio.sleep(1.0)  # the first wait after the shield: the timeout lands here
        log.append("not reached")

    start = now()
    with pytest.raises(TimeoutExceeded):
        await Timeout(1.0).call(fn)
    assert log == ["shielded part done"]
    assert 5.0 <= now() - start <= 5.01


async def test_a_shielded_cleanup_after_the_caller_cancelled_runs_to_its_end() -> None:
    """The caller cancels, the call cleans up in a shield, the timeout falls due meanwhile:
    the cleanup finishes and the caller's cancellation propagates."""
    log = []

    async def fn() -> None:
        try:
            await anyio.sleep(10.0)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(3.0)
                log.append("cleanup done")

    with anyio.move_on_after(1.0) as caller:
        await Timeout(2.0).call(fn)
    assert caller.cancelled_caught
    assert log == ["cleanup done"]


async def test_a_shield_around_the_timeout_does_not_hold_it_off() -> None:
    """Shields that enclose the Timeout protect from outer cancellation, not from it."""
    start = now()
    with anyio.CancelScope(shield=True), pytest.raises(TimeoutExceeded):
        await Timeout(1.0).call(anyio.sleep, 10.0)
    assert now() - start == 1.0


class EarlyTimersLoop(VirtualTimeEventLoop):
    """Runs a timer set more than a millisecond ahead on the whole millisecond before it, as
    uvloop may (it rounds delays to whole ms); shorter ones on time. Starts off the ms grid."""

    def __init__(self) -> None:
        super().__init__(start=0.0007)

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        if when - self.time() > 0.001:
            when = math.floor(when * 1000) / 1000
        return super().call_at(when, callback, *args, context=context)


def test_a_loop_whose_timers_run_early_never_times_out_early() -> None:
    """The timeout looks at the clock when its timer runs, and waits out the rest."""

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        due = loop.time() + 1.0
        with pytest.raises(TimeoutExceeded):
            await Timeout(1.0).call(asyncio.sleep, 10.0)
        on_time = loop.time() >= due
        with anyio.move_on_after(1.0) as caller:  # a tie: the caller wins
            await Timeout(1.0).call(anyio.sleep, 10.0)
        return on_time, caller.cancelled_caught

    with asyncio.Runner(loop_factory=EarlyTimersLoop) as runner:
        on_time, caller_won = runner.run(main())
    assert on_time
    assert caller_won
