"""Retry and Backoff: attempts, delays, jitter bounds, hints, deadline, cancellation."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import (
    Backoff,
    BulkheadFullError,
    CallContext,
    CircuitOpenError,
    Event,
    Retry,
    RetryGaveUp,
    RetryScheduled,
    call_context,
    current_context,
)
from resilient._time import now

pytestmark = pytest.mark.anyio

JITTERS = ["none", "full", "equal", "decorrelated"]


class Flaky:
    """An async callable failing ``failures`` times, then returning ``value``."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError, value: Any = "ok"):
        self.failures = failures
        self.error = error
        self.value = value
        self.starts: list[float] = []

    async def __call__(self) -> Any:
        self.starts.append(now())
        if len(self.starts) <= self.failures:
            raise self.error(f"failure {len(self.starts)}")
        return self.value


def recorder() -> tuple[list[Event], Any]:
    events: list[Event] = []
    return events, events.append


# --- Backoff: pure properties -------------------------------------------------


@given(
    kind=st.sampled_from(["constant", "linear", "exponential"]),
    initial=st.floats(0, 100),
    extra=st.floats(0, 1000),
    jitter=st.sampled_from(JITTERS),
    k=st.integers(1, 10_000),
    previous=st.floats(0, 10_000),
    seed=st.integers(0, 2**32),
)
def test_delay_lies_within_its_jitter_bounds(
    kind: str, initial: float, extra: float, jitter: Any, k: int, previous: float, seed: int
) -> None:
    """Every computed delay is in its jitter's bounds, never above maximum, never negative."""
    maximum = initial + extra
    if kind == "constant":
        b = Backoff.constant(initial, jitter=jitter)
        maximum = initial
    elif kind == "linear":
        b = Backoff.linear(initial, step=extra / 7, maximum=maximum, jitter=jitter)
    else:
        b = Backoff.exponential(initial, maximum=maximum, multiplier=3.0, jitter=jitter)
    base = b.base(k)
    assert 0 <= base <= maximum
    d = b.delay(k, previous, random.Random(seed))
    assert 0 <= d <= maximum
    assert math.isfinite(d)
    if jitter == "none":
        assert d == base
    elif jitter == "full":
        assert 0 <= d <= base
    elif jitter == "equal":
        assert base / 2 <= d <= base
    else:
        assert min(initial, maximum) <= d <= maximum


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (Backoff.constant(2.0), [2.0, 2.0, 2.0]),
        (Backoff.linear(1.0), [1.0, 2.0, 3.0]),
        (Backoff.linear(1.0, step=0.5, maximum=1.8), [1.0, 1.5, 1.8]),
        (Backoff.exponential(1.0, maximum=5.0, jitter="none"), [1.0, 2.0, 4.0, 5.0]),
        (Backoff.exponential(0.5, multiplier=3, maximum=100, jitter="none"), [0.5, 1.5, 4.5]),
    ],
)
def test_base_delays_follow_the_formulas(backoff: Backoff, expected: list[float]) -> None:
    """constant, linear and exponential delays match the contract's formulas, capped."""
    assert [backoff.base(k) for k in range(1, len(expected) + 1)] == expected


def test_exponential_saturates_instead_of_overflowing() -> None:
    """A huge retry index gives the maximum, not an OverflowError."""
    b = Backoff.exponential(1.0, maximum=30.0, multiplier=10.0, jitter="none")
    assert b.base(10**9) == 30.0


def test_decorrelated_jitter_uses_previous_delay() -> None:
    """Decorrelated jitter draws from [initial, 3 * previous] capped at maximum."""
    b = Backoff.exponential(1.0, maximum=100.0, jitter="decorrelated")
    rng = random.Random(1)
    for previous in (0.0, 1.0, 5.0, 20.0):
        for _ in range(50):
            d = b.delay(3, previous, rng)
            assert 1.0 <= d <= min(100.0, 3 * max(previous, 1.0))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Backoff.constant(-1), "delay.*-1"),
        (lambda: Backoff.constant(math.nan), "delay.*nan"),
        (lambda: Backoff.linear(5, maximum=1), "initial.*5"),
        (lambda: Backoff.exponential(1, maximum=math.inf), "maximum.*inf"),
        (lambda: Backoff.exponential(2, maximum=1), "initial.*2"),
        (lambda: Backoff.exponential(multiplier=0.5), "multiplier.*0.5"),
        (lambda: Backoff.exponential(jitter="wild"), "jitter.*wild"),  # type: ignore[arg-type]
        (lambda: Retry("r", attempts=0), "attempts.*0"),
        (lambda: Retry("r", attempts=True), "attempts.*True"),
        (lambda: Retry("r", deadline=0), "deadline.*0"),
        (lambda: Retry("r", retry_on=(KeyboardInterrupt,)), "retry_on"),
        (lambda: Retry("r", retry_on=42), "retry_on.*42"),  # type: ignore[arg-type]
        (lambda: Retry("r", backoff=3), "backoff.*3"),  # type: ignore[arg-type]
        (lambda: Retry("r", max_retry_after=-2), "max_retry_after.*-2"),
        (lambda: Retry(""), "name"),
    ],
)
def test_bad_configuration_names_argument_and_value(build: Any, match: str) -> None:
    """Invalid options raise ValueError naming the argument and the value."""
    with pytest.raises(ValueError, match=match):
        build()


# --- Retry behaviour ------------------------------------------------------------


async def test_succeeds_after_failures_with_backoff_sleeps() -> None:
    """Failures are retried after the backoff delay, measured on the loop clock."""
    fn = Flaky(2)
    retry = Retry("r", attempts=3, backoff=Backoff.linear(1.0))
    assert await retry.call(fn) == "ok"
    gaps = [b - a for a, b in zip(fn.starts, fn.starts[1:], strict=False)]
    assert gaps == pytest.approx([1.0, 2.0])


async def test_ten_minute_backoff_runs_in_virtual_time() -> None:
    """A retry with a ten-minute backoff completes, taking exactly that long on the clock."""
    fn = Flaky(1)
    retry = Retry("r", attempts=2, backoff=Backoff.constant(600))
    start = now()
    assert await retry.call(fn) == "ok"
    assert now() - start == pytest.approx(600)


@pytest.mark.parametrize("attempts", [1, 2, 5])
async def test_exhaustion_reraises_last_error_with_a_note(attempts: int) -> None:
    """Giving up re-raises the last exception unchanged, with a PEP 678 note."""
    fn = Flaky(100)
    events, observe = recorder()
    retry = Retry("net", attempts=attempts, backoff=Backoff.constant(1), observers=[observe])
    with pytest.raises(ConnectionError) as info:
        await retry.call(fn)
    assert len(fn.starts) == attempts
    assert str(info.value) == f"failure {attempts}"
    notes = info.value.__notes__
    assert len(notes) == 1
    assert "Retry('net')" in notes[0]
    assert f"{attempts} attempt" in notes[0]
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [e.attempt for e in scheduled] == list(range(1, attempts))
    gave_up = [e for e in events if isinstance(e, RetryGaveUp)]
    assert len(gave_up) == 1
    assert gave_up[0].reason == "attempts"
    assert gave_up[0].attempts == attempts


@pytest.mark.parametrize("decorated", [False, True])
async def test_last_error_does_not_chain_to_earlier_attempts(decorated: bool) -> None:
    """The error re-raised on giving up carries no earlier attempt's error as its context."""
    fn = Flaky(100)
    retry = Retry("net", attempts=3, backoff=Backoff.constant(0))
    with pytest.raises(ConnectionError) as info:
        await (retry(fn)() if decorated else retry.call(fn))
    assert str(info.value) == "failure 3"
    assert info.value.__context__ is None
    assert info.value.__cause__ is None


@given(attempts=st.integers(1, 8), failures=st.integers(0, 12), delay=st.floats(0, 50))
async def test_attempts_never_exceeded_and_no_sleep_after_last(
    attempts: int, failures: int, delay: float
) -> None:
    """At most ``attempts`` calls, and the call ends right after the last attempt."""
    fn = Flaky(failures)
    retry = Retry("r", attempts=attempts, backoff=Backoff.constant(delay))
    start = now()
    try:
        await retry.call(fn)
    except ConnectionError:
        assert failures >= attempts
    else:
        assert failures < attempts
    calls = len(fn.starts)
    assert calls == min(attempts, failures + 1)
    # Exactly one sleep between consecutive attempts, none after the last.
    assert now() - start == pytest.approx(delay * (calls - 1))


async def test_non_retryable_error_propagates_at_once_without_note() -> None:
    """An error outside ``retry_on`` is raised after one attempt, untouched."""
    fn = Flaky(5, error=KeyError)
    retry = Retry("r", attempts=5, retry_on=(ConnectionError,))
    with pytest.raises(KeyError) as info:
        await retry.call(fn)
    assert len(fn.starts) == 1
    assert not getattr(info.value, "__notes__", [])


async def test_retry_on_predicate() -> None:
    """A predicate on the exception decides what is retried."""
    fn = Flaky(2, error=ValueError)
    retry = Retry(
        "r", attempts=3, retry_on=lambda e: "failure" in str(e), backoff=Backoff.constant(0)
    )
    assert await retry.call(fn) == "ok"


@pytest.mark.parametrize("error", [CircuitOpenError("b", 1.0), BulkheadFullError("k", "max_wait")])
async def test_own_rejections_are_not_retried_by_default(error: Exception) -> None:
    """CircuitOpenError and BulkheadFullError are not retried unless listed by class."""
    calls = 0

    async def reject() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        await Retry("r", attempts=3, backoff=Backoff.constant(0)).call(reject)
    assert calls == 1
    calls = 0
    listed = Retry("r", attempts=3, retry_on=(type(error),), backoff=Backoff.constant(0))
    with pytest.raises(type(error)):
        await listed.call(reject)
    assert calls == 3


async def test_retry_if_result_retries_then_returns_last_result() -> None:
    """A result matching ``retry_if_result`` is retried; exhausted, the last result returns."""
    values = iter([None, None, None])

    async def fn() -> Any:
        return next(values)

    retry = Retry("r", attempts=3, retry_if_result=lambda v: v is None, backoff=Backoff.constant(1))
    start = now()
    assert await retry.call(fn) is None
    assert now() - start == pytest.approx(2.0)

    results = iter([None, 7])

    async def fn2() -> Any:
        return next(results)

    assert await retry.call(fn2) == 7


@pytest.mark.parametrize("hint", [4.0, 4, timedelta(seconds=4)])
async def test_retry_after_hint_replaces_backoff(hint: Any) -> None:
    """An error's ``retry_after`` (seconds or timedelta) replaces the backoff delay."""

    class RateLimited(Exception):
        retry_after = hint

    fn = Flaky(1, error=RateLimited)
    retry = Retry("r", attempts=2, backoff=Backoff.constant(100))
    start = now()
    assert await retry.call(fn) == "ok"
    assert now() - start == pytest.approx(4.0)


async def test_retry_after_extractor_and_cap() -> None:
    """A custom extractor supplies hints; a hint above ``max_retry_after`` gives up."""

    class Limited(Exception):
        def __init__(self, seconds: float) -> None:
            super().__init__(seconds)
            self.seconds = seconds

    calls = 0

    async def fn() -> str:
        nonlocal calls
        calls += 1
        raise Limited(30.0 if calls > 1 else 2.0)

    retry = Retry(
        "r",
        attempts=5,
        retry_after=lambda e: getattr(e, "seconds", None),
        max_retry_after=10.0,
    )
    start = now()
    with pytest.raises(Limited) as info:
        await retry.call(fn)
    assert calls == 2
    assert now() - start == pytest.approx(2.0)
    assert "max_retry_after" in info.value.__notes__[0]


async def test_a_give_up_on_the_first_attempt_says_attempt_in_the_singular() -> None:
    """The note counts one attempt as "1 attempt", whatever made the retry give up."""

    class Limited(Exception):
        retry_after = 120.0

    async def fn() -> None:
        raise Limited

    with pytest.raises(Limited) as info:
        await Retry("hint", max_retry_after=60.0).call(fn)
    assert "after 1 attempt:" in info.value.__notes__[0]


@given(
    deadline=st.floats(0.5, 100),
    delay=st.floats(0, 30),
    work=st.floats(0, 10),
)
async def test_no_retry_starts_past_the_deadline(
    deadline: float, delay: float, work: float
) -> None:
    """Every attempt starts at most ``deadline`` seconds after the first started."""
    starts: list[float] = []

    async def slow_failure() -> None:
        starts.append(now())
        await anyio.sleep(work)
        raise ConnectionError

    retry = Retry("r", attempts=50, backoff=Backoff.constant(delay), deadline=deadline)
    with pytest.raises(ConnectionError) as info:
        await retry.call(slow_failure)
    assert all(s - starts[0] <= deadline + 1e-9 for s in starts)
    if len(starts) < 50:
        assert "deadline" in info.value.__notes__[0]
        # The next attempt would have started past the deadline.
        assert (starts[-1] - starts[0]) + work + delay > deadline - 1e-9


async def test_cancellation_during_backoff_propagates_and_stops() -> None:
    """Cancelling during a backoff sleep ends the call at once; no further attempt starts."""
    fn = Flaky(100)
    retry = Retry("r", attempts=10, backoff=Backoff.constant(60))
    start = now()
    with anyio.move_on_after(90) as scope:
        await retry.call(fn)
    assert scope.cancelled_caught
    assert len(fn.starts) == 2  # at t=0 and t=60; cancelled in the sleep before t=120
    assert now() - start == pytest.approx(90)
    await anyio.sleep(1000)
    assert len(fn.starts) == 2


async def test_cancellation_is_never_retried() -> None:
    """A cancelled attempt propagates; it is not classified as a retryable error."""
    calls = 0

    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await anyio.sleep_forever()

    with anyio.move_on_after(5):
        await Retry("r", attempts=5, retry_on=lambda e: True).call(hangs)
    assert calls == 1


async def test_each_call_gets_its_own_context_and_keeps_it_across_attempts() -> None:
    """Concurrent calls see separate contexts; one context object per call, updated per attempt."""
    retry = Retry("r", attempts=2, backoff=Backoff.constant(1))
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    async def fn(who: str) -> str:
        ctx = current_context()
        assert type(ctx) is CallContext
        assert ctx.policies == ("retry:r",)
        assert ctx.fallback is None  # nothing written by another call shows
        ctx.fallback = who  # a write stays in this call's context
        seen[who].append((id(ctx), ctx.attempt))
        await anyio.sleep(0.5)
        assert current_context() is ctx
        assert ctx.fallback == who
        if len(seen[who]) == 1:
            ctx.fallback = None
            raise ConnectionError
        return who

    async with anyio.create_task_group() as tg:
        tg.start_soon(retry(fn), "a")
        tg.start_soon(retry.call, fn, "b")
    for who in ("a", "b"):
        (first, one), (second, two) = seen[who]
        assert (one, two) == (1, 2)
        assert first == second  # the same object, updated for attempt 2
    assert seen["a"][0][0] != seen["b"][0][0]
    assert current_context() is None
    assert await retry.call(fn, "a") == "a"  # nothing left over from earlier calls


async def test_attempt_number_is_visible_in_the_call_context() -> None:
    """Inside the call, ``current_context().attempt`` is the 1-based attempt."""
    seen: list[int] = []

    async def fn() -> str:
        ctx = current_context()
        assert ctx is not None
        seen.append(ctx.attempt)
        if len(seen) < 3:
            raise ConnectionError
        return "ok"

    await Retry("r", attempts=3, backoff=Backoff.constant(0)).call(fn)
    assert seen == [1, 2, 3]
    assert current_context() is None


@pytest.mark.parametrize("via", ["decorator", "call"])
@pytest.mark.parametrize("opened", [False, True], ids=["alone", "in-an-open-context"])
async def test_a_retry_opens_its_context_or_joins_the_open_one(via: str, opened: bool) -> None:
    """Alone, a retry's calls see a context of their own, gone afterwards; inside an
    open context they see that one, which the retry fills in and leaves open."""
    seen: list[tuple[int, tuple[str, ...]]] = []

    async def fn() -> str:
        ctx = current_context()
        assert ctx is not None
        seen.append((ctx.attempt, ctx.policies))
        if len(seen) < 2:
            raise ConnectionError
        return "ok"

    retry = Retry("r", attempts=3, backoff=Backoff.constant(0))
    run = retry(fn) if via == "decorator" else (lambda: retry.call(fn))
    if opened:
        with call_context() as outer:
            assert await run() == "ok"
            assert current_context() is outer
        assert (outer.attempt, outer.policies) == (2, ("retry:r",))
    else:
        assert await run() == "ok"
    assert seen == [(1, ("retry:r",)), (2, ("retry:r",))]
    assert current_context() is None


async def test_decorator_keeps_metadata_and_arguments() -> None:
    """Decorated functions keep their name and receive their arguments."""
    retry = Retry("r", attempts=2, backoff=Backoff.constant(0))

    @retry
    async def add(a: int, b: int = 1) -> int:
        """Adds."""
        return a + b

    assert add.__name__ == "add"
    assert add.__doc__ == "Adds."
    assert await add(2, b=3) == 5


async def test_methods_can_be_decorated() -> None:
    """A decorated method binds ``self`` as usual."""
    retry = Retry("r", attempts=2, backoff=Backoff.constant(0))

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @retry
        async def get(self, key: str) -> str:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError
            return key

    c = Client()
    assert await c.get("k") == "k"
    assert c.calls == 2


async def _attempts_seeing_a_cancel_as_the_backoff_ends() -> list[bool]:
    """One run: for each attempt, whether the caller's scope was already cancelled."""
    scope = anyio.CancelScope()
    seen: list[bool] = []
    retry = Retry("r", attempts=3, backoff=Backoff.constant(1.0))

    async def fn() -> None:
        seen.append(scope.cancel_called)
        if len(seen) == 1:
            raise ConnectionError
        await anyio.sleep(1.0)

    async def canceller() -> None:
        await anyio.sleep(1.0)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(canceller)
        await anyio.lowlevel.checkpoint()  # the canceller's timer is due first at t=1
        with scope:
            await retry.call(fn)
    assert scope.cancelled_caught
    return seen


async def test_a_cancel_in_the_instant_the_backoff_ends_starts_no_attempt() -> None:
    """Another task cancels the caller's scope at the very instant the backoff sleep ends,
    before the retrying task resumes: no further attempt starts (cancellation is never
    retried). On asyncio anyio would deliver it only at the attempt's first await."""
    for _ in range(10):  # trio orders tasks woken together at random: several runs
        seen = await _attempts_seeing_a_cancel_as_the_backoff_ends()
        assert True not in seen, seen
