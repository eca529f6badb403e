"""Observers: global and per-policy, dropped when they raise, never breaking a call."""

from __future__ import annotations

import gc
import logging
from typing import Any

import pytest

import resilient
from resilient import (
    Backoff,
    Bulkhead,
    CircuitBreaker,
    Event,
    Fallback,
    FallbackChain,
    Retry,
    RetryScheduled,
    Timeout,
)
from resilient._events import registry

pytestmark = pytest.mark.anyio


async def two_failures_then_ok() -> str:
    two_failures_then_ok.calls += 1  # type: ignore[attr-defined]
    if two_failures_then_ok.calls <= 2:  # type: ignore[attr-defined]
        raise ConnectionError
    return "ok"


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    two_failures_then_ok.calls = 0  # type: ignore[attr-defined]


async def test_global_observer_sees_existing_and_new_policies() -> None:
    """add_observer reaches policies built before and after it; remove_observer stops it."""
    seen: list[Event] = []
    before = Retry("before", attempts=3, backoff=Backoff.constant(0))
    resilient.add_observer(seen.append)
    try:
        after = Retry("after", attempts=3, backoff=Backoff.constant(0))
        await before.call(two_failures_then_ok)
        two_failures_then_ok.calls = 0  # type: ignore[attr-defined]
        await after.call(two_failures_then_ok)
    finally:
        resilient.remove_observer(seen.append)
    assert [e.name for e in seen if isinstance(e, RetryScheduled)] == [
        "before", "before", "after", "after",
    ]  # fmt: skip
    assert before._listeners == ()
    seen.clear()
    two_failures_then_ok.calls = 0  # type: ignore[attr-defined]
    await before.call(two_failures_then_ok)
    assert seen == []


async def test_own_observers_only_see_their_policy() -> None:
    """observers= on one policy does not leak to others."""
    mine: list[Event] = []
    watched = Retry("watched", attempts=3, backoff=Backoff.constant(0), observers=[mine.append])
    other = Retry("other", attempts=3, backoff=Backoff.constant(0))
    await watched.call(two_failures_then_ok)
    two_failures_then_ok.calls = 0  # type: ignore[attr-defined]
    await other.call(two_failures_then_ok)
    assert {e.name for e in mine} == {"watched"}
    assert len(mine) == 2


async def test_raising_observer_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """An observer that raises never breaks the call; it is logged once and detached."""
    calls = 0

    def broken(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("exporter down")

    good: list[Event] = []
    retry = Retry("r", attempts=3, backoff=Backoff.constant(0), observers=[broken, good.append])
    with caplog.at_level(logging.ERROR, logger="resilient"):
        assert await retry.call(two_failures_then_ok) == "ok"
    assert calls == 1
    assert len(good) == 2
    assert "exporter down" in caplog.text
    assert broken not in retry._listeners


def test_policies_are_weakly_held() -> None:
    """A dropped policy leaves the registry."""
    retry = Retry("ephemeral")
    assert retry in registry.policies
    del retry
    gc.collect()
    assert all(p.name != "ephemeral" for p in registry.policies)


def test_registry_forgets_dead_breakers_and_stays_bounded() -> None:
    """Dead breakers (reference cycles, freed by the collector) leave the registry, and
    its list of references stays within about twice the live policies under churn."""
    gc.collect()
    live_before = len(registry.policies)
    for i in range(3_000):
        CircuitBreaker(f"churn-{i}")
        if i % 100 == 99:
            gc.collect()
    gc.collect()
    assert not [p for p in registry.policies if p.name.startswith("churn-")]
    # At most 100 churned breakers were ever alive at once.
    assert len(registry.policies._refs) < max(2 * (live_before + 100), 64)


def test_registry_is_a_weak_set() -> None:
    """Membership, discard (which the fault registry uses), iteration in creation order."""
    a, b, c = Retry("set-a"), Retry("set-b"), Retry("set-c")
    assert a in registry.policies
    assert c in registry.policies
    assert "set-a" not in registry.policies
    ours = [p for p in registry.policies if p.name.startswith("set-")]
    assert ours == [a, b, c]
    registry.policies.discard(b)
    registry.policies.discard(b)  # unknown: ignored
    assert b not in registry.policies
    assert [p for p in registry.policies if p.name.startswith("set-")] == [a, c]


def test_registry_keeps_policies_built_in_several_threads() -> None:
    """Policies built in threads at once, while another thread reads, are all registered."""
    import threading

    built: list[list[Retry]] = [[] for _ in range(4)]
    reads = 0
    done = threading.Event()

    def build(mine: list[Retry], k: int) -> None:
        mine.extend(Retry(f"thread-{k}-{i}") for i in range(1_000))

    def read() -> None:
        nonlocal reads
        while not done.is_set():
            list(registry.policies)
            reads += 1

    reader = threading.Thread(target=read)
    reader.start()
    builders = [threading.Thread(target=build, args=(built[k], k)) for k in range(4)]
    for t in builders:
        t.start()
    for t in builders:
        t.join()
    done.set()
    reader.join()
    live = {id(p) for p in registry.policies}
    assert all(id(p) in live for mine in built for p in mine)
    assert reads > 0


def test_events_are_frozen_and_slotted() -> None:
    """Events cannot be mutated and carry no per-instance dict."""
    event = RetryScheduled("retry", "r", 1, 0.5, "ConnectionError")
    with pytest.raises(AttributeError):
        event.delay = 2.0  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_add_observer_rejects_non_callables() -> None:
    """Only callables can observe."""
    with pytest.raises(ValueError, match="observer"):
        resilient.add_observer(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="observers"):
        Retry("r", observers=[42])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "make",
    [
        lambda obs: Retry("r", observers=obs),
        lambda obs: Bulkhead("b", 1, observers=obs),
        lambda obs: Timeout(1.0, observers=obs),
        lambda obs: Fallback(lambda exc: 0, observers=obs),
        lambda obs: FallbackChain(observers=obs),
        lambda obs: CircuitBreaker("c", observers=obs),
    ],
)
@pytest.mark.parametrize("bad", [5, None, print])
def test_observers_that_are_not_a_sequence_are_a_value_error(make: Any, bad: object) -> None:
    """A lone observer, None or a number for ``observers=`` is a ValueError naming the argument."""
    with pytest.raises(ValueError, match=r"observers must be a sequence of callables, got "):
        make(bad)


def test_an_observer_both_global_and_own_hears_each_event_once() -> None:
    """Attached with add_observer and through observers= too, an observer is called once."""
    heard: list[Event] = []
    observer = heard.append
    before = Retry("before", observers=[observer])
    resilient.add_observer(observer)
    try:
        after = Retry("after", observers=[observer])
        for policy in (before, after):
            policy._emit(RetryScheduled("retry", policy.name, 1, 0.0, None))
    finally:
        resilient.remove_observer(observer)
    assert [e.name for e in heard] == ["before", "after"]
