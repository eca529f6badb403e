"""CircuitBreaker: the contract's semantics, pinned one by one on both anyio backends."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import resilient
from resilient import (
    CallFinished,
    CallRejected,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    Event,
    Pipeline,
    StateChanged,
    TimeWindow,
)
from resilient._time import now
from resilient.testing import current_clock

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise Boom


async def sleeper(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "slept"


async def attempt(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``fn``; return its value, or the exception it raised."""
    try:
        return await fn()
    except Exception as exc:
        return exc


async def run_many(breaker: CircuitBreaker, fns: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    return [await attempt(lambda f=f: breaker.call(f)) for f in fns]


def recorder() -> tuple[list[Event], Callable[[Event], None]]:
    events: list[Event] = []
    return events, events.append


# -- construction ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"failure_rate_threshold": 0}, "failure_rate_threshold .* got 0"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold .* got 1.5"),
        ({"slow_call_duration": -1}, "slow_call_duration .* got -1"),
        ({"slow_call_rate_threshold": 0.0}, "slow_call_rate_threshold"),
        ({"window": 100}, "window must be a CountWindow or TimeWindow, got 100"),
        ({"minimum_calls": 0}, "minimum_calls must be an int >= 1, got 0"),
        ({"consecutive_failures": 0}, "consecutive_failures .* got 0"),
        ({"open_duration": 0}, "open_duration .* got 0"),
        ({"open_duration": float("nan")}, "open_duration"),
        ({"open_duration_multiplier": 0.5}, "open_duration_multiplier .* got 0.5"),
        ({"open_duration_max": 1.0, "open_duration": 5.0}, "open_duration_max must be >= "),
        ({"half_open_max_calls": 0}, "half_open_max_calls .* got 0"),
        ({"half_open_max_duration": 0}, "half_open_max_duration .* got 0"),
        ({"failure_on": (KeyboardInterrupt,)}, "failure_on"),
        ({"ignore": "x"}, "ignore"),
        ({"failure_if": 3}, "failure_if must be a predicate, got 3"),
        ({"store": object()}, "store must be a BreakerStore .* got <object object"),
        ({"observers": [1]}, "observers"),
    ],
)
def test_bad_configuration_raises_value_error(kwargs: dict[str, Any], match: str) -> None:
    """Each bad option raises ValueError naming the argument and the value."""
    with pytest.raises(ValueError, match=match):
        CircuitBreaker("bad", **kwargs)


def test_bad_name_raises_value_error() -> None:
    """An empty name is refused."""
    with pytest.raises(ValueError, match="name"):
        CircuitBreaker("")


def test_built_and_inspected_outside_a_loop() -> None:
    """A breaker is built, read and switched without a running event loop."""
    breaker = CircuitBreaker("import-time")
    assert breaker.state is CircuitState.CLOSED
    m = breaker.metrics
    assert (m.calls, m.failure_rate, m.not_permitted_calls) == (0, 0.0, 0)
    breaker.force_open()
    assert breaker.state is CircuitState.FORCED_OPEN
    breaker.reset()
    assert breaker.state == "closed"
    assert repr(breaker) == "CircuitBreaker('import-time')"


def test_public_names_and_defaults() -> None:
    """The breaker's names are exported, its defaults are the documented ones, it is final."""
    assert {"CircuitBreaker", "CircuitState", "CountWindow", "TimeWindow"} <= set(resilient.__all__)
    b = CircuitBreaker("defaults")
    assert (b.failure_rate_threshold, b.slow_call_duration, b.slow_call_rate_threshold) == (
        0.5,
        None,
        1.0,
    )
    assert isinstance(b.window, CountWindow)
    assert b.window.size == 100
    assert (b.minimum_calls, b.consecutive_failures, b.open_duration) == (10, None, 30.0)
    assert (b.open_duration_multiplier, b.open_duration_max, b.half_open_max_calls) == (
        1.0,
        None,
        1,
    )
    assert getattr(CircuitBreaker, "__final__", False)
    assert [s.value for s in CircuitState] == [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
    ]


def test_breakers_do_not_share_a_window() -> None:
    """Two breakers built from one window object (or the default) record separately."""
    window = CountWindow(5)
    a = CircuitBreaker("a", window=window)
    b = CircuitBreaker("b", window=window)
    assert a._window is not b._window
    assert a._window is not window


def test_breaker_carries_no_dict() -> None:
    """A breaker, its state and its window keep their fields in slots: no per-instance dict.

    Thousands of breakers are common (one per host, per tenant): a managed
    dict costs each about 30 bytes more. Policies without ``__slots__`` keep
    their dict.
    """
    breaker = CircuitBreaker("slotted", window=CountWindow(10))
    for part in (breaker, breaker._state, breaker.window):
        assert not hasattr(part, "__dict__"), part
    with pytest.raises(AttributeError):
        breaker.colour = "red"  # type: ignore[attr-defined]
    retry = resilient.Retry("with-a-dict")
    retry.note = "kept"  # type: ignore[attr-defined]
    assert vars(retry)["note"] == "kept"


def test_memory_per_breaker_within_budget() -> None:
    """Everything a CountWindow(10) breaker allocates, its registry entry included: <= 600 B.

    As benchmark case 5 measures it (tracemalloc over many breakers kept
    alive), with fewer breakers: about 540 bytes on CPython 3.11.
    """
    import gc
    import tracemalloc

    n = 2_000
    names = [f"budget-{i}" for i in range(n)]
    keep: list[CircuitBreaker | None] = [None] * n
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            keep[i] = CircuitBreaker(names[i], window=CountWindow(10))
        per_breaker = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert per_breaker <= 600, f"{per_breaker:.0f} bytes per breaker"


def test_lazily_formatted_open_error_equals_the_real_one() -> None:
    """The fast path's CircuitOpenError reads, prints and pickles like one built normally."""
    import pickle

    from resilient.breaker import _open_error

    for retry_after in (12.3456, None, 0.0):
        fast, real = _open_error("db", retry_after), CircuitOpenError("db", retry_after)
        assert type(fast) is CircuitOpenError
        assert (str(fast), repr(fast)) == (str(real), repr(real))
        assert fast.args == real.args
        assert vars(fast) == vars(real)
        copy = pickle.loads(pickle.dumps(fast))
        assert (type(copy), str(copy), vars(copy)) == (CircuitOpenError, str(real), vars(real))


def test_illegal_transition_raises() -> None:
    """A transition missing from the table raises instead of happening."""
    from resilient.breaker import _HalfOpen

    breaker = CircuitBreaker("table")
    with pytest.raises(RuntimeError, match="illegal transition closed -> half_open"):
        breaker._set_state(_HalfOpen(breaker, 30.0))
    assert breaker.state is CircuitState.CLOSED


async def test_decorator_keeps_signature_and_works_on_methods() -> None:
    """The decorated function keeps its name and signature; methods bind as usual."""
    breaker = CircuitBreaker("sig")

    @breaker
    async def fetch(url: str, *, timeout: float = 1.0) -> bytes:
        return url.encode()

    assert fetch.__name__ == "fetch"
    assert str(inspect.signature(fetch)) == "(url: 'str', *, timeout: 'float' = 1.0) -> 'bytes'"

    class Client:
        @breaker
        async def get(self, key: str) -> str:
            return key * 2

    assert await Client().get("ab") == "abab"
    with pytest.raises(ValueError, match="decorates an async callable"):
        breaker(3)  # type: ignore[arg-type]


# -- tripping ------------------------------------------------------------------------


async def test_trips_at_threshold_computed_exactly() -> None:
    """1 failure in 10 calls trips a 0.1 threshold (failed / total >= threshold)."""
    breaker = CircuitBreaker("exact", failure_rate_threshold=0.1, minimum_calls=10)
    await run_many(breaker, [boom] + [ok] * 8)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.failure_rate == 0.0  # below minimum_calls
    await run_many(breaker, [ok])  # the success completes the minimum: 1/10 >= 0.1
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.failure_rate == 0.1


async def test_minimum_calls_is_capped_by_a_count_window() -> None:
    """With CountWindow(4), four calls are enough even when minimum_calls is 10."""
    breaker = CircuitBreaker("cap", window=CountWindow(4), minimum_calls=10)
    await run_many(breaker, [boom, ok, boom, ok])
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("via", ["decorator", "call"])
async def test_a_full_window_of_successes_still_counts_every_later_outcome(via: str) -> None:
    """Successes written over successes go unrecorded on the fast path (they change
    nothing); a failure still counts, for exactly ``size`` calls."""
    breaker = CircuitBreaker("quiet", window=CountWindow(5), failure_rate_threshold=0.4)
    guarded = {"ok": breaker(ok), "boom": breaker(boom)}
    if via == "call":
        guarded = {"ok": lambda: breaker.call(ok), "boom": lambda: breaker.call(boom)}

    async def run(*names: str) -> None:
        for name in names:
            await attempt(guarded[name])

    await run(*["ok"] * 100, "boom")
    assert (breaker.metrics.calls, breaker.metrics.failed_calls) == (5, 1)
    await run(*["ok"] * 4)
    assert breaker.metrics.failed_calls == 1  # still one of the last five
    await run("ok")
    assert breaker.metrics.failed_calls == 0  # pushed out by the fifth success
    await run(*["ok"] * 50, "boom", "ok", "ok", "ok")
    assert breaker.state is CircuitState.CLOSED
    await run("boom")  # two failures in the last five: 0.4
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("via", ["decorator", "call"])
async def test_a_success_after_a_failure_breaks_the_run_also_in_a_full_window(via: str) -> None:
    """Successes over successes go unrecorded on the fast path, but never the first
    one after a failure: it breaks the run that ``consecutive_failures`` counts."""
    breaker = CircuitBreaker(
        "run", window=CountWindow(4), consecutive_failures=2, failure_rate_threshold=1.0
    )
    guarded = {"ok": breaker(ok), "boom": breaker(boom)}
    if via == "call":
        guarded = {"ok": lambda: breaker.call(ok), "boom": lambda: breaker.call(boom)}
    for name in ["ok"] * 10 + ["boom", "ok", "boom", "ok", "boom", "ok", "ok", "boom"]:
        await attempt(guarded[name])
        assert breaker.state is CircuitState.CLOSED, name
    await attempt(guarded["boom"])  # two in a row
    assert breaker.state is CircuitState.OPEN


async def test_tripping_call_gets_its_own_error_then_circuit_open_error() -> None:
    """The call that trips sees its own error; the next is rejected with retry_after."""
    breaker = CircuitBreaker("trip", minimum_calls=2, open_duration=10.0)
    results = await run_many(breaker, [ok, boom, ok])
    assert results[0] == "ok"
    assert isinstance(results[1], Boom)
    assert isinstance(results[2], CircuitOpenError)
    assert results[2].name == "trip"
    assert results[2].retry_after == 10.0
    await anyio.sleep(4.0)
    err = await attempt(lambda: breaker.call(ok))
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after == pytest.approx(6.0)
    assert breaker.metrics.not_permitted_calls == 2


async def test_rejected_calls_do_not_run_and_are_not_recorded() -> None:
    """OPEN never calls the function and keeps the window that tripped."""
    breaker = CircuitBreaker("norun", minimum_calls=2)
    await run_many(breaker, [boom, boom])
    ran = []

    async def tracked() -> None:
        ran.append(1)

    for _ in range(5):
        assert isinstance(await attempt(lambda: breaker.call(tracked)), CircuitOpenError)
    assert ran == []
    m = breaker.metrics
    assert (m.calls, m.failed_calls, m.failure_rate, m.not_permitted_calls) == (2, 2, 1.0, 5)


async def test_consecutive_failures() -> None:
    """N recorded failures in a row open; a success breaks the run, an ignored error does not."""
    breaker = CircuitBreaker(
        "consec", consecutive_failures=3, minimum_calls=100, ignore=(KeyError,)
    )

    async def ignored() -> None:
        raise KeyError("x")

    await run_many(breaker, [boom, boom, ok, boom, boom, ignored])
    assert breaker.state is CircuitState.CLOSED
    await run_many(breaker, [boom])
    assert breaker.state is CircuitState.OPEN


async def test_outcome_classes() -> None:
    """ignore wins over failure_on; errors outside failure_on are successes; failure_if fails."""

    async def key() -> None:
        raise KeyError("k")  # a LookupError too, but ignored

    async def index() -> None:
        raise IndexError("i")

    async def none() -> None:
        return None

    events, observer = recorder()
    breaker = CircuitBreaker(
        "classes",
        failure_on=(LookupError,),
        ignore=(KeyError,),
        failure_if=lambda value: value is None,
        minimum_calls=100,
        observers=[observer],
    )
    results = await run_many(breaker, [key, index, boom, none, ok])
    assert isinstance(results[0], KeyError)
    assert isinstance(results[2], Boom)
    assert results[3] is None  # a failure_if failure still returns its value
    m = breaker.metrics
    assert (m.calls, m.failed_calls) == (4, 2)  # index and none failed; boom, ok succeeded
    outcomes = [(e.outcome, e.error) for e in events if isinstance(e, CallFinished)]
    assert outcomes == [
        ("ignored", "KeyError"),
        ("failure", "IndexError"),
        ("success", "Boom"),
        ("failure", None),
        ("success", None),
    ]


async def test_failure_on_predicate() -> None:
    """failure_on may be a predicate on the exception."""
    breaker = CircuitBreaker("pred", failure_on=lambda exc: "fatal" in str(exc), minimum_calls=1)

    async def mild() -> None:
        raise ValueError("mild")

    async def fatal() -> None:
        raise ValueError("fatal")

    await run_many(breaker, [mild])
    assert breaker.state is CircuitState.CLOSED
    await run_many(breaker, [fatal])
    assert breaker.state is CircuitState.OPEN


async def test_slow_calls() -> None:
    """Slow means strictly longer than slow_call_duration; a slow failure is slow and failed."""
    breaker = CircuitBreaker(
        "slow",
        slow_call_duration=2.0,
        slow_call_rate_threshold=0.5,
        failure_rate_threshold=1.0,
        minimum_calls=4,
    )

    async def slow_boom() -> None:
        await anyio.sleep(3.0)
        raise Boom

    await run_many(breaker, [lambda: sleeper(2.0), slow_boom, ok])
    m = breaker.metrics
    assert breaker.state is CircuitState.CLOSED
    assert (m.calls, m.failed_calls, m.slow_calls) == (3, 1, 1)
    await run_many(breaker, [lambda: sleeper(2.5)])  # 2 slow of 4 >= 0.5
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.slow_call_rate == 0.5


async def test_no_call_is_slow_without_slow_call_duration() -> None:
    """With slow_call_duration=None, even very long calls are not slow."""
    breaker = CircuitBreaker("never-slow", minimum_calls=1, slow_call_rate_threshold=0.1)
    await run_many(breaker, [lambda: sleeper(1e6)])
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.slow_calls == 0


# -- half-open -----------------------------------------------------------------------


async def trip(breaker: CircuitBreaker) -> None:
    while breaker.state is CircuitState.CLOSED:
        await attempt(lambda: breaker.call(boom))


async def test_open_becomes_half_open_lazily_at_open_duration() -> None:
    """At opened_at + open_duration, state already reads HALF_OPEN, before any call."""
    breaker = CircuitBreaker("lazy", minimum_calls=1, open_duration=5.0)
    await trip(breaker)
    await anyio.sleep(4.999)
    assert breaker.state is CircuitState.OPEN
    await anyio.sleep(0.001)
    assert breaker.state is CircuitState.HALF_OPEN
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.calls == 0  # a fresh window


async def test_thousand_concurrent_calls_in_half_open_run_exactly_three() -> None:
    """1,000 calls arriving at once in HALF_OPEN: exactly half_open_max_calls run."""
    breaker = CircuitBreaker("crowd", minimum_calls=1, open_duration=1.0, half_open_max_calls=3)
    await trip(breaker)
    await anyio.sleep(1.0)
    assert breaker.state is CircuitState.HALF_OPEN
    ran = 0
    rejected: list[CircuitOpenError] = []

    async def trial() -> None:
        nonlocal ran
        ran += 1
        await anyio.sleep(0.5)

    async def one() -> None:
        try:
            await breaker.call(trial)
        except CircuitOpenError as exc:
            rejected.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(one)
    assert ran == 3
    assert len(rejected) == 997
    assert all(e.retry_after is None for e in rejected)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics.not_permitted_calls == 997


async def test_half_open_verdict_waits_for_every_trial() -> None:
    """The verdict comes when all trials have recorded, over the trials only."""
    breaker = CircuitBreaker("verdict", minimum_calls=1, open_duration=1.0, half_open_max_calls=3)
    await trip(breaker)
    await anyio.sleep(1.0)
    results = await run_many(breaker, [boom, ok])
    assert isinstance(results[0], Boom)
    assert breaker.state is CircuitState.HALF_OPEN
    m = breaker.metrics
    assert (m.calls, m.failed_calls, m.failure_rate) == (2, 1, 0.5)  # no minimum in HALF_OPEN
    await run_many(breaker, [ok])  # 1 of 3 failed < 0.5: closed
    assert breaker.state is CircuitState.CLOSED


async def test_failed_trials_reopen_with_backoff_and_closing_resets_it() -> None:
    """Each re-open from HALF_OPEN multiplies open_duration, up to the max; CLOSED resets it."""
    breaker = CircuitBreaker(
        "backoff",
        minimum_calls=1,
        open_duration=10.0,
        open_duration_multiplier=2.0,
        open_duration_max=25.0,
    )
    await trip(breaker)
    waits = []
    for _ in range(3):
        err = await attempt(lambda: breaker.call(ok))
        waits.append(err.retry_after)
        await anyio.sleep(err.retry_after)
        assert breaker.state is CircuitState.HALF_OPEN
        await attempt(lambda: breaker.call(boom))
    err = await attempt(lambda: breaker.call(ok))
    waits.append(err.retry_after)
    assert waits == [10.0, 20.0, 25.0, 25.0]
    m = breaker.metrics  # after trials re-open: the trials
    assert (m.calls, m.failed_calls, m.failure_rate) == (1, 1, 1.0)
    await anyio.sleep(25.0)
    await breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED
    await trip(breaker)
    err = await attempt(lambda: breaker.call(ok))
    assert err.retry_after == 10.0


async def test_stale_trial_reopens_after_half_open_max_duration() -> None:
    """Trials unfinished half_open_max_duration after the first began re-open; stale outcomes."""
    events, observer = recorder()
    breaker = CircuitBreaker(
        "stale",
        minimum_calls=1,
        open_duration=5.0,
        half_open_max_duration=3.0,
        observers=[observer],
    )
    await trip(breaker)
    await anyio.sleep(5.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt, lambda: breaker.call(sleeper, 10.0))
        await anyio.sleep(3.0)
        assert breaker.state is CircuitState.OPEN  # seen at the deadline
        err = await attempt(lambda: breaker.call(ok))
        assert isinstance(err, CircuitOpenError)
        assert err.retry_after == 5.0
    # The stale trial succeeded at t=10 after the re-open at t=3: it changed nothing,
    # though its event fired; by then the new OPEN period (3 + 5) had become HALF_OPEN.
    assert breaker.state is CircuitState.HALF_OPEN
    finished = [e for e in events if isinstance(e, CallFinished)]
    assert finished[-1].outcome == "success"
    assert finished[-1].duration == 10.0
    changes = [(e.old, e.new) for e in events if isinstance(e, StateChanged)]
    assert changes[-3:] == [("open", "half_open"), ("half_open", "open"), ("open", "half_open")]


async def test_no_trial_no_timeout() -> None:
    """HALF_OPEN with no trial stays HALF_OPEN however long nothing happens."""
    breaker = CircuitBreaker("idle", minimum_calls=1, open_duration=1.0)
    await trip(breaker)
    await anyio.sleep(3600.0)
    assert breaker.state is CircuitState.HALF_OPEN


# -- cancellation ----------------------------------------------------------------------


async def test_cancelled_trial_returns_its_permit() -> None:
    """A trial cancelled while running is not recorded and the next trial can run."""
    events, observer = recorder()
    breaker = CircuitBreaker("cancel", minimum_calls=1, open_duration=1.0, observers=[observer])
    await trip(breaker)
    await anyio.sleep(1.0)
    with anyio.move_on_after(0.5):
        await breaker.call(sleeper, 10.0)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics.calls == 0
    finished = [e for e in events if isinstance(e, CallFinished)]
    assert finished[-1].outcome == "cancelled"
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize("observed", [False, True])
async def test_cancelled_call_in_closed_is_not_recorded(observed: bool) -> None:
    """Cancellation in CLOSED is neither success nor failure, on the fast path and the slow."""
    breaker = CircuitBreaker(
        "cancel-closed", observers=[lambda e: None] if observed else [], minimum_calls=1
    )
    wrapped = breaker(sleeper)
    with anyio.move_on_after(1.0) as scope:
        await wrapped(5.0)
    assert scope.cancelled_caught
    assert breaker.metrics.calls == 0
    assert breaker.state is CircuitState.CLOSED


async def test_ignored_trial_returns_its_permit() -> None:
    """An ignored error in HALF_OPEN frees the permit for another trial."""
    breaker = CircuitBreaker("ign", minimum_calls=1, open_duration=1.0, ignore=(KeyError,))
    await trip(breaker)
    await anyio.sleep(1.0)

    async def ignored() -> None:
        raise KeyError("k")

    assert isinstance(await attempt(lambda: breaker.call(ignored)), KeyError)
    assert breaker.state is CircuitState.HALF_OPEN
    await breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize("how", ["ignored", "cancelled"])
async def test_a_trial_that_gives_its_permit_back_leaves_no_timeout(how: str) -> None:
    """An ignored or cancelled trial stops the half_open_max_duration clock: no trial runs."""
    breaker = CircuitBreaker(
        "no-clock",
        minimum_calls=1,
        open_duration=5.0,
        half_open_max_duration=3.0,
        ignore=(KeyError,),
    )
    await trip(breaker)
    await anyio.sleep(5.0)

    async def ignored() -> None:
        raise KeyError("k")

    if how == "ignored":
        assert isinstance(await attempt(lambda: breaker.call(ignored)), KeyError)
    else:
        with anyio.move_on_after(1.0):
            await breaker.call(sleeper, 10.0)
    await anyio.sleep(4.0)  # past the deadline the first trial would have set
    assert breaker.state is CircuitState.HALF_OPEN
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


async def test_the_trial_clock_runs_only_while_a_trial_runs() -> None:
    """With two trials, the first done and none running, the clock stops; the next restarts it."""
    breaker = CircuitBreaker(
        "two-trials",
        minimum_calls=1,
        open_duration=30.0,
        half_open_max_calls=2,
        half_open_max_duration=3.0,
    )
    await trip(breaker)
    await anyio.sleep(30.0)
    assert await breaker.call(ok) == "ok"  # trial 1 of 2, done at once
    await anyio.sleep(10.0)
    assert breaker.state is CircuitState.HALF_OPEN  # nothing ran over
    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt, lambda: breaker.call(sleeper, 10.0))  # trial 2 hangs
        await anyio.sleep(2.999)
        assert breaker.state is CircuitState.HALF_OPEN
        await anyio.sleep(0.001)
        assert breaker.state is CircuitState.OPEN  # 3 s after trial 2 began


class PredicateBroke(Exception):
    pass


@pytest.mark.parametrize("where", ["failure_if", "failure_on", "ignore"])
async def test_a_predicate_that_raises_in_half_open_returns_the_trial_permit(where: str) -> None:
    """The predicate's error propagates, nothing is recorded, and the next trial may run."""
    broken = False
    answer = where == "failure_on"  # what the predicate says while it works

    def predicate(_: object) -> bool:
        if broken:
            raise PredicateBroke
        return answer

    options: dict[str, Any] = {where: predicate}
    breaker = CircuitBreaker("pred", minimum_calls=1, open_duration=1.0, **options)
    await trip(breaker)
    await anyio.sleep(1.0)
    broken = True
    trial = ok if where == "failure_if" else boom  # failure_if sees results, the others errors
    assert isinstance(await attempt(lambda: breaker.call(trial)), PredicateBroke)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics.calls == 0
    broken = False
    assert await breaker.call(ok) == "ok"  # admitted: the permit came back
    assert breaker.state is CircuitState.CLOSED


# -- time window -----------------------------------------------------------------------


async def test_time_window_forgets_old_outcomes_after_an_hour_idle() -> None:
    """Failures older than the window stop counting, also across an hour of idle time."""
    breaker = CircuitBreaker("tw", window=TimeWindow(10.0), minimum_calls=4)
    await run_many(breaker, [boom, boom, ok])
    assert breaker.metrics.calls == 3
    current_clock().jump(3600.0)
    assert breaker.metrics.calls == 0
    await run_many(breaker, [ok, ok, ok, boom])  # 1 of 4: the old failures are gone
    assert breaker.state is CircuitState.CLOSED
    await anyio.sleep(5.0)
    await run_many(breaker, [boom, boom])  # 3 of 6 >= 0.5
    assert breaker.state is CircuitState.OPEN


async def test_time_window_counts_while_younger_than_the_window() -> None:
    """An outcome still counts just under the window's age and is gone by window + bucket."""
    breaker = CircuitBreaker("tw2", window=TimeWindow(10.0, bucket=1.0), minimum_calls=100)
    start = now()
    await run_many(breaker, [boom])
    await anyio.sleep(9.99)
    assert breaker.metrics.failed_calls == 1
    await anyio.sleep(1.01)
    assert now() - start == pytest.approx(11.0)
    assert breaker.metrics.failed_calls == 0


# -- manual control and events ------------------------------------------------------------


async def test_manual_switches_and_their_events() -> None:
    """force_open rejects, disable runs unrecorded, reset starts over; each emits StateChanged."""
    events, observer = recorder()
    breaker = CircuitBreaker("manual", minimum_calls=1, observers=[observer])
    await breaker.call(ok)
    breaker.force_open()
    breaker.force_open()  # already forced: no second event
    err = await attempt(lambda: breaker.call(ok))
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after is None
    breaker.disable()
    assert isinstance(await attempt(lambda: breaker.call(boom)), Boom)
    assert breaker.state is CircuitState.DISABLED
    assert breaker.metrics.calls == 1  # the disabled call was not recorded
    breaker.reset()
    m = breaker.metrics
    assert (breaker.state, m.calls, m.not_permitted_calls) == (CircuitState.CLOSED, 0, 0)
    changes = [(e.old, e.new) for e in events if isinstance(e, StateChanged)]
    assert changes == [
        ("closed", "forced_open"),
        ("forced_open", "disabled"),
        ("disabled", "closed"),
    ]
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert [(e.kind, e.name, e.reason) for e in rejected] == [
        ("circuit_breaker", "manual", "forced_open")
    ]


async def test_rejection_reasons() -> None:
    """Rejections say "open" or "half_open_full" (forced_open is pinned above)."""
    events, observer = recorder()
    breaker = CircuitBreaker("reasons", minimum_calls=1, open_duration=1.0, observers=[observer])
    await trip(breaker)
    await attempt(lambda: breaker.call(ok))
    await anyio.sleep(1.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, sleeper, 1.0)
        await anyio.sleep(0.5)
        err = await attempt(lambda: breaker.call(ok))
        assert isinstance(err, CircuitOpenError)
        assert err.retry_after is None
    reasons = [e.reason for e in events if isinstance(e, CallRejected)]
    assert reasons == ["open", "half_open_full"]


async def test_observer_added_after_decoration_sees_calls() -> None:
    """A global observer added later still sees a decorated breaker's calls."""
    breaker = CircuitBreaker("late")
    wrapped = breaker(ok)
    await wrapped()
    events, observer = recorder()
    resilient.add_observer(observer)
    try:
        await wrapped()
    finally:
        resilient.remove_observer(observer)
    await wrapped()
    finished = [e for e in events if isinstance(e, CallFinished) and e.name == "late"]
    assert len(finished) == 1
    assert breaker.metrics.calls == 3


@pytest.mark.parametrize("via", ["decorator", "call"])
async def test_fault_hook_is_honoured(via: str) -> None:
    """An injected fault replaces the function, and the breaker records its failures."""
    breaker = CircuitBreaker("faulty", minimum_calls=2)
    wrapped = breaker(ok)

    def inject(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return boom

    breaker._fault = inject
    for _ in range(2):
        call = wrapped if via == "decorator" else (lambda: breaker.call(ok))
        assert isinstance(await attempt(call), Boom)
    assert breaker.state is CircuitState.OPEN
    breaker._fault = None
    breaker.reset()
    assert await wrapped() == "ok"


async def test_in_a_pipeline() -> None:
    """Composed in a Pipeline, the breaker records every attempt through ``call``."""
    breaker = CircuitBreaker("piped", minimum_calls=3)
    retry = resilient.Retry("r", attempts=3, backoff=resilient.Backoff.constant(0.1))
    piped = Pipeline(retry, breaker)(boom)
    assert isinstance(await attempt(piped), Boom)
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics.calls == 3
    assert isinstance(await attempt(piped), CircuitOpenError)  # not retried by default


async def test_open_metrics_keep_the_window_that_tripped() -> None:
    """In OPEN, a time window's counts stay as they were at the trip, however long it lasts."""
    breaker = CircuitBreaker("frozen", window=TimeWindow(5.0), minimum_calls=2, open_duration=30.0)
    await run_many(breaker, [boom, boom])
    assert breaker.state is CircuitState.OPEN
    await anyio.sleep(20.0)  # the window alone would have forgotten both
    assert breaker.state is CircuitState.OPEN
    m = breaker.metrics
    assert (m.calls, m.failed_calls, m.failure_rate) == (2, 2, 1.0)
