"""resilient.snapshot(): every live policy, weakly held, and the weighted health score."""

from __future__ import annotations

import gc
import itertools
import json
import math
import weakref
from types import MappingProxyType

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import resilient
from resilient import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    PolicySnapshot,
    Retry,
    Snapshot,
    Timeout,
)
from resilient.observe.snapshot import HEALTH_WEIGHTS, STATE_SCORES
from resilient.testing import current_clock

_ids = itertools.count()
STATES = ("closed", "open", "half_open", "forced_open", "disabled")


def mine(snap: Snapshot, prefix: str) -> dict[str, PolicySnapshot]:
    """The policies of this test (other tests' policies may still be alive)."""
    return {p.name: p for p in snap.policies if p.name.startswith(prefix)}


def breaker(name: str, state: str, failure_rate: float = 0.0, slow: float = 0.0) -> PolicySnapshot:
    figures = {
        "failure_rate": failure_rate,
        "slow_call_rate": slow,
        "calls": 10,
        "failed_calls": round(failure_rate * 10),
        "slow_calls": round(slow * 10),
        "not_permitted_calls": 0,
    }
    return PolicySnapshot("circuit_breaker", name, state, MappingProxyType(figures))


def bulkhead(name: str, active: int, max_concurrent: int) -> PolicySnapshot:
    figures = {
        "active": active,
        "waiting": 0,
        "available": max_concurrent - active,
        "max_concurrent": max_concurrent,
    }
    return PolicySnapshot("bulkhead", name, None, MappingProxyType(figures))


def test_snapshot_lists_live_policies_with_kind_name_state_and_figures() -> None:
    """Every live policy appears with its kind and name; stateless kinds have no figures."""
    retry = Retry("snap-a-retry")
    timeout = Timeout(1.0, name="snap-a-timeout")
    pool = Bulkhead("snap-a-pool", 3)
    found = mine(resilient.snapshot(), "snap-a-")
    assert set(found) == {"snap-a-retry", "snap-a-timeout", "snap-a-pool"}
    assert found["snap-a-retry"] == PolicySnapshot("retry", "snap-a-retry", None, {})
    assert found["snap-a-timeout"].kind == "timeout"
    assert dict(found["snap-a-pool"].figures) == {
        "active": 0,
        "waiting": 0,
        "available": 3,
        "max_concurrent": 3,
    }
    del retry, timeout, pool


def test_dropped_policy_disappears_and_snapshot_holds_nothing() -> None:
    """A policy nobody refers to is gone from the next snapshot; a snapshot keeps none alive."""
    pool = Bulkhead("snap-b-pool", 1)
    ref = weakref.ref(pool)
    snap = resilient.snapshot()
    assert "snap-b-pool" in mine(snap, "snap-b-")
    del pool
    gc.collect()
    assert ref() is None
    assert mine(resilient.snapshot(), "snap-b-") == {}
    assert "snap-b-pool" in mine(snap, "snap-b-")  # the old snapshot is plain data


def test_snapshot_is_sorted_and_read_only() -> None:
    """Policies come sorted by kind then name, and their figures cannot be changed."""
    keep = [Bulkhead("snap-c-z", 1), Retry("snap-c-b"), Bulkhead("snap-c-a", 1)]
    snap = resilient.snapshot()
    names = [p.name for p in snap.policies if p.name.startswith("snap-c-")]
    assert names == ["snap-c-a", "snap-c-z", "snap-c-b"]
    with pytest.raises(TypeError):
        snap.of_kind("bulkhead")[0].figures["active"] = 5  # type: ignore[index]
    del keep


def test_snapshot_outside_a_loop_has_no_time() -> None:
    """Taken outside a running loop, ``taken_at`` is None."""
    assert resilient.snapshot().taken_at is None


@pytest.mark.anyio
async def test_snapshot_reads_a_busy_bulkhead_now() -> None:
    """While two calls hold the permits and one waits, the figures say so, at the loop time."""
    name = f"snap-d-{next(_ids)}"
    pool = Bulkhead(name, 2)
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(pool.call, hold)
        await anyio.sleep(1.0)
        snap = resilient.snapshot()
        release.set()
    figures = mine(snap, name)[name].figures
    assert dict(figures) == {"active": 2, "waiting": 1, "available": 0, "max_concurrent": 2}
    assert snap.taken_at == pytest.approx(current_clock().now())
    after = mine(resilient.snapshot(), name)[name].figures
    assert after["active"] == 0


def test_health_of_nothing_is_one() -> None:
    """With no breaker and no bulkhead every sub-score is 1, so the score is 1."""
    snap = Snapshot((PolicySnapshot("retry", "r", None, {}),))
    assert snap.health_components() == {
        "breakers": 1.0,
        "error_rate": 1.0,
        "latency": 1.0,
        "bulkheads": 1.0,
    }
    assert snap.health_score() == 1.0


def test_health_score_worked_example() -> None:
    """One open breaker at 100% failures and a full bulkhead: 0.3*0 + 0.3*0 + 0.2*1 + 0.2*0."""
    snap = Snapshot((breaker("b", "open", failure_rate=1.0), bulkhead("p", 4, 4)))
    assert snap.health_components() == {
        "breakers": 0.0,
        "error_rate": 0.0,
        "latency": 1.0,
        "bulkheads": 0.0,
    }
    assert snap.health_score() == pytest.approx(0.2)


def test_health_thresholds_are_the_documented_ramps() -> None:
    """Error and slow rates score 1 up to 5%, 0 from 50%; saturation 1 up to 70%, 0 when full."""
    cases = [
        (breaker("b", "closed", failure_rate=0.05), "error_rate", 1.0),
        (breaker("b", "closed", failure_rate=0.275), "error_rate", 0.5),
        (breaker("b", "closed", failure_rate=0.5), "error_rate", 0.0),
        (breaker("b", "closed", slow=0.05), "latency", 1.0),
        (breaker("b", "closed", slow=0.275), "latency", 0.5),
        (breaker("b", "closed", slow=0.9), "latency", 0.0),
        (bulkhead("p", 7, 10), "bulkheads", 1.0),
        (bulkhead("p", 17, 20), "bulkheads", 0.5),
        (bulkhead("p", 10, 10), "bulkheads", 0.0),
        (breaker("b", "half_open"), "breakers", 0.5),
        (breaker("b", "disabled"), "breakers", 1.0),
        (breaker("b", "forced_open"), "breakers", 0.0),
    ]
    for policy, key, expected in cases:
        got = Snapshot((policy,)).health_components()[key]
        assert got == pytest.approx(expected), (policy, key)


def test_as_dict_is_json_ready() -> None:
    """as_dict() survives json.dumps and carries the score, the sub-scores and every policy."""
    snap = Snapshot((breaker("b", "half_open", 0.2), bulkhead("p", 1, 2)), taken_at=3.0)
    data = json.loads(json.dumps(snap.as_dict()))
    assert data["health_score"] == pytest.approx(snap.health_score())
    assert data["components"] == snap.health_components()
    assert data["taken_at"] == 3.0
    assert [p["name"] for p in data["policies"]] == ["b", "p"]
    assert data["policies"][0]["state"] == "half_open"


rates = st.floats(min_value=0.0, max_value=1.0)
breakers = st.builds(breaker, st.just("b"), st.sampled_from(STATES), rates, rates)
bulkheads = st.integers(1, 50).flatmap(
    lambda m: st.builds(bulkhead, st.just("p"), st.integers(0, m), st.just(m))
)


def model_score(policies: list[PolicySnapshot]) -> float:
    """The documented definition, written out independently."""

    def ramp(x: float, good: float, bad: float) -> float:
        return min(1.0, max(0.0, (bad - x) / (bad - good)))

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else 1.0

    bs = [p for p in policies if p.kind == "circuit_breaker"]
    hs = [p for p in policies if p.kind == "bulkhead"]
    state = mean([STATE_SCORES[p.state or ""] for p in bs])
    measuring = [p for p in bs if p.state != "disabled"]  # a disabled one records nothing
    error = mean([ramp(p.figures["failure_rate"], 0.05, 0.5) for p in measuring])
    slow = mean([ramp(p.figures["slow_call_rate"], 0.05, 0.5) for p in measuring])
    sat = mean([ramp(p.figures["active"] / p.figures["max_concurrent"], 0.7, 1.0) for p in hs])
    return 0.3 * state + 0.3 * error + 0.2 * slow + 0.2 * sat


@given(st.lists(st.one_of(breakers, bulkheads), max_size=8))
def test_health_score_matches_the_model_and_stays_in_range(policies: list[PolicySnapshot]) -> None:
    """For any mix of breakers and bulkheads the score is in [0, 1] and matches the definition."""
    score = Snapshot(tuple(policies)).health_score()
    assert 0.0 <= score <= 1.0
    assert math.isclose(score, model_score(policies), abs_tol=1e-9)


@given(st.lists(breakers, min_size=1, max_size=5), st.integers(0, 4), rates)
def test_more_failures_never_raise_the_score(
    policies: list[PolicySnapshot], index: int, extra: float
) -> None:
    """Raising one breaker's failure rate never makes the health score higher."""
    i = index % len(policies)
    p = policies[i]
    worse_rate = min(1.0, p.figures["failure_rate"] + extra)
    worse = breaker(p.name, p.state or "closed", worse_rate, p.figures["slow_call_rate"])
    changed = [*policies[:i], worse, *policies[i + 1 :]]
    assert Snapshot(tuple(changed)).health_score() <= Snapshot(tuple(policies)).health_score()


def test_a_disabled_breaker_counts_as_up_but_not_in_the_rates() -> None:
    """A disabled breaker keeps the window it had (it records nothing): its old rates do not
    weigh on error_rate or latency, and it scores 1 on breakers."""
    snap = Snapshot((breaker("off", "disabled", 1.0, 1.0), breaker("on", "closed", 0.275, 0.0)))
    parts = snap.health_components()
    assert parts["breakers"] == 1.0
    assert parts["error_rate"] == pytest.approx(0.5)  # the closed breaker's 27.5 % alone
    assert parts["latency"] == 1.0


def test_weights_sum_to_one() -> None:
    """The documented weights: breakers 0.3, error rate 0.3, latency 0.2, bulkheads 0.2."""
    assert dict(HEALTH_WEIGHTS) == {
        "breakers": 0.3,
        "error_rate": 0.3,
        "latency": 0.2,
        "bulkheads": 0.2,
    }


@pytest.mark.anyio
async def test_snapshot_reads_a_real_breaker_through_its_states() -> None:
    """A tripped breaker shows open with the window that tripped it, then half-open in time."""
    name = f"snap-e-{next(_ids)}"
    breaker = CircuitBreaker(name, minimum_calls=2, open_duration=10.0)

    async def down() -> None:
        raise ConnectionError

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(down)
    with pytest.raises(CircuitOpenError):
        await breaker.call(down)
    tripped = mine(resilient.snapshot(), name)[name]
    assert tripped.state == "open"
    assert dict(tripped.figures) == {
        "failure_rate": 1.0,
        "slow_call_rate": 0.0,
        "calls": 2,
        "failed_calls": 2,
        "slow_calls": 0,
        "not_permitted_calls": 1,
    }
    alone = Snapshot((tripped,))
    assert alone.health_components() == {
        "breakers": 0.0,
        "error_rate": 0.0,
        "latency": 1.0,
        "bulkheads": 1.0,
    }
    await anyio.sleep(10.0)
    assert mine(resilient.snapshot(), name)[name].state == "half_open"
    breaker.force_open()
    assert mine(resilient.snapshot(), name)[name].state == "forced_open"
