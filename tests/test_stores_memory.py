"""MemoryStore: breakers of one name acting as one, in virtual time on both backends."""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow, TimeWindow
from resilient.observe.snapshot import read_policy
from resilient.stores import BreakerStore, MemoryStore
from resilient.testing import run

pytestmark = pytest.mark.anyio

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Boom(Exception):
    pass


async def boom() -> None:
    raise Boom


async def ok() -> str:
    return "ok"


def fleet(n: int = 3, store: MemoryStore | None = None, **kw: Any) -> list[CircuitBreaker]:
    store = store or MemoryStore()
    options: dict[str, Any] = {"minimum_calls": 9, "open_duration": 10.0} | kw
    return [CircuitBreaker("dep", store=store, **options) for _ in range(n)]


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises((Boom, CircuitOpenError)):
            await breaker.call(boom)


def test_memory_store_is_a_breaker_store() -> None:
    """MemoryStore satisfies the BreakerStore protocol; a breaker built with it reads CLOSED."""
    store = MemoryStore()
    assert isinstance(store, BreakerStore)
    breaker = CircuitBreaker("outside-a-loop", store=store)
    assert breaker.state is CLOSED
    assert breaker.metrics.store_degraded is False
    assert CircuitBreaker("no-store").metrics.store_degraded is None


async def test_failures_spread_over_breakers_open_all() -> None:
    """3 failures in each of 3 breakers reach minimum_calls=9 together: all open."""
    breakers = fleet()
    for b in breakers[:2]:
        await fail(b, 3)
        assert b.state is CLOSED  # 3 or 6 of the fleet's 9
    await fail(breakers[2], 3)
    assert [b.state for b in breakers] == [OPEN] * 3
    with pytest.raises(CircuitOpenError) as info:
        await breakers[0].call(ok)
    assert info.value.retry_after == pytest.approx(10.0)


async def test_rates_are_the_fleets_not_one_breakers() -> None:
    """A breaker failing alone among healthy peers does not open: the fleet's rate is low."""
    breakers = fleet(minimum_calls=5)
    for _ in range(10):
        await breakers[0].call(ok)
        await breakers[1].call(ok)
    await fail(breakers[2], 5)  # 5 of 25 calls failed: 20% < 50%
    assert [b.state for b in breakers] == [CLOSED] * 3
    m = breakers[2].metrics
    assert (m.calls, m.failed_calls, m.failure_rate) == (25, 5, 0.2)


async def test_breakers_of_other_names_or_stores_are_independent() -> None:
    """Only breakers of the same name on the same store share a state."""
    store = MemoryStore()
    a = CircuitBreaker("a", store=store, minimum_calls=2)
    b = CircuitBreaker("b", store=store, minimum_calls=2)
    c = CircuitBreaker("a", store=MemoryStore(), minimum_calls=2)
    await fail(a, 2)
    assert (a.state, b.state, c.state) == (OPEN, CLOSED, CLOSED)


async def test_a_newcomer_joins_the_fleets_state() -> None:
    """A breaker attached to an OPEN fleet rejects at once, with the fleet's time left."""
    store = MemoryStore()
    first = fleet(1, store, minimum_calls=2)[0]
    await fail(first, 2)
    await anyio.sleep(4.0)
    late = CircuitBreaker("dep", store=store)
    assert late.state is OPEN
    with pytest.raises(CircuitOpenError) as info:
        await late.call(ok)
    assert info.value.retry_after == pytest.approx(6.0)


async def test_half_open_cap_is_fleet_wide() -> None:
    """With half_open_max_calls=2, 3 breakers racing 4 calls each run exactly 2 trials."""
    breakers = fleet(minimum_calls=1, half_open_max_calls=2)
    await fail(breakers[0])
    await anyio.sleep(10.0)
    ran = 0
    rejected = 0

    async def trial() -> None:
        nonlocal ran
        ran += 1
        await anyio.sleep(1.0)

    async def attempt(b: CircuitBreaker) -> None:
        nonlocal rejected
        try:
            await b.call(trial)
        except CircuitOpenError:
            rejected += 1

    async with anyio.create_task_group() as tg:
        for b in breakers:
            for _ in range(4):
                tg.start_soon(attempt, b)
    assert (ran, rejected) == (2, 10)
    assert [b.state for b in breakers] == [CLOSED] * 3


async def test_trials_in_different_breakers_decide_together() -> None:
    """Two trials in two breakers: one fails (rate 0.5) so the fleet re-opens, backed off."""
    breakers = fleet(minimum_calls=1, half_open_max_calls=2, open_duration_multiplier=2.0)
    await fail(breakers[0])
    await anyio.sleep(10.0)
    assert await breakers[0].call(ok) == "ok"
    assert breakers[1].state is HALF_OPEN  # one of two trials recorded
    await fail(breakers[1])
    assert [b.state for b in breakers] == [OPEN] * 3
    with pytest.raises(CircuitOpenError) as info:
        await breakers[2].call(ok)
    assert info.value.retry_after == pytest.approx(20.0)


async def test_a_cancelled_trial_returns_the_fleets_permit() -> None:
    """A trial cancelled while running frees its permit: another breaker's trial runs."""
    breakers = fleet(2, minimum_calls=1)
    await fail(breakers[0])
    await anyio.sleep(10.0)
    with anyio.move_on_after(1.0):
        await breakers[0].call(anyio.sleep, 5.0)
    assert await breakers[1].call(ok) == "ok"
    assert [b.state for b in breakers] == [CLOSED] * 2


async def test_a_stuck_fleet_trial_reopens_after_half_open_max_duration() -> None:
    """Peers that saw HALF_OPEN re-open when no verdict comes within half_open_max_duration."""
    breakers = fleet(2, minimum_calls=1, half_open_max_duration=3.0)
    await fail(breakers[0])
    await anyio.sleep(10.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(breakers[0].call, anyio.sleep, 100.0)
        await anyio.sleep(0.5)
        assert breakers[1].state is HALF_OPEN
        await anyio.sleep(3.0)
        assert [b.state for b in breakers] == [OPEN, OPEN]
        tg.cancel_scope.cancel()


async def test_a_peer_refused_a_trial_still_reopens_a_stuck_fleet() -> None:
    """A peer whose own call was refused (the fleet's one trial runs elsewhere) keeps
    watching that trial: with no verdict within half_open_max_duration, it re-opens."""
    breakers = fleet(2, minimum_calls=1, half_open_max_duration=3.0)
    await fail(breakers[0])
    await anyio.sleep(10.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(breakers[0].call, anyio.sleep, 100.0)  # its process dies, say
        await anyio.sleep(0.5)
        with pytest.raises(CircuitOpenError):
            await breakers[1].call(ok)  # half_open_full: the trial is elsewhere
        await anyio.sleep(3.0)
        assert breakers[1].state is OPEN  # only this peer looks: it re-opens the fleet
        tg.cancel_scope.cancel()


async def test_manual_switches_are_fleet_wide() -> None:
    """force_open(), disable() and reset() on one breaker apply to every breaker of the name."""
    breakers = fleet()
    breakers[0].force_open()
    assert [b.state for b in breakers] == [CircuitState.FORCED_OPEN] * 3
    breakers[1].disable()
    assert [b.state for b in breakers] == [CircuitState.DISABLED] * 3
    breakers[2].reset()
    assert [b.state for b in breakers] == [CLOSED] * 3


async def test_a_reset_clears_every_breakers_window() -> None:
    """After a fleet reset, outcomes recorded before it no longer count anywhere."""
    breakers = fleet(2, minimum_calls=4)
    await fail(breakers[0], 3)
    breakers[1].reset()
    await fail(breakers[1])
    assert breakers[0].state is CLOSED
    assert breakers[1].metrics.calls == 1


async def test_time_window_outcomes_expire_fleet_wide() -> None:
    """With TimeWindow(10), the others' old failures drop out of the fleet's counts."""
    breakers = fleet(2, window=TimeWindow(10.0), minimum_calls=4)
    await fail(breakers[0], 3)
    assert breakers[1].metrics.calls == 3
    await anyio.sleep(12.0)
    assert breakers[1].metrics.calls == 0
    await fail(breakers[1])
    assert breakers[1].state is CLOSED


async def test_events_announce_adopted_transitions() -> None:
    """A breaker adopting the fleet's OPEN emits StateChanged like a local trip."""
    seen: list[Any] = []
    store = MemoryStore()
    a = CircuitBreaker("dep", store=store, minimum_calls=1)
    b = CircuitBreaker("dep", store=store, minimum_calls=1, observers=[seen.append])
    await fail(a)
    assert b.state is OPEN
    changes = [(e.old, e.new) for e in seen if type(e).__name__ == "StateChanged"]
    assert changes == [("closed", "open")]


def test_snapshot_shows_store_degraded() -> None:
    """A breaker with a store reports store_degraded (0 for memory); one without does not."""
    with_store = read_policy(CircuitBreaker("snap-store", store=MemoryStore()))
    without = read_policy(CircuitBreaker("snap-plain"))
    assert with_store.figures["store_degraded"] == 0.0
    assert "store_degraded" not in without.figures


@given(
    size=st.integers(1, 6),
    minimum=st.integers(1, 12),
    steps=st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=40),
)
def test_fleet_window_matches_a_model(
    size: int, minimum: int, steps: list[tuple[int, bool]]
) -> None:
    """Fleet totals are the sum of each breaker's last `size` outcomes; it opens exactly
    when those totals reach minimum_calls and a 50% failure rate."""

    async def main() -> None:
        breakers = fleet(3, window=CountWindow(size), minimum_calls=minimum, open_duration=1e6)
        windows: list[deque[bool]] = [deque(maxlen=size) for _ in breakers]
        cap = min(minimum, size)
        for index, failed in steps:
            breaker = breakers[index]
            if failed:
                await fail(breaker)
            else:
                await breaker.call(ok)
            windows[index].append(failed)
            calls = sum(len(w) for w in windows)
            failures = sum(sum(w) for w in windows)
            tripped = calls >= cap and failures / calls >= 0.5
            if tripped:
                assert [b.state for b in breakers] == [OPEN] * 3
                return
            assert breaker.state is CLOSED
            m = breaker.metrics
            assert (m.calls, m.failed_calls) == (calls, failures)

    run(main)
