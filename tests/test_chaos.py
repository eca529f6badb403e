"""Fault-injection policies: which calls are hit, what they do, and how policies around react."""

from __future__ import annotations

import math
import random
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import Backoff, Fallback, Pipeline, Retry, Timeout, TimeoutExceeded
from resilient._time import now
from resilient.chaos import InjectFault, InjectLatency, InjectResult

pytestmark = pytest.mark.anyio


class Downstream:
    """A stand-in for the real call: counts calls and echoes its argument."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, x: int = 0) -> str:
        self.calls += 1
        return f"real {x}"


async def outcomes(policy: Any, n: int, *, arg: int = 0) -> list[str]:
    """``n`` calls through ``policy``: the value, or ``"fault"`` when it raised."""
    down = Downstream()
    seen = []
    for _ in range(n):
        try:
            seen.append(await policy.call(down, arg))
        except ConnectionError:
            seen.append("fault")
    return seen


async def test_fault_hits_every_call_without_a_schedule() -> None:
    """With no schedule every call raises, and the downstream is never called."""
    fault = InjectFault("db", error=ConnectionError)
    down = Downstream()
    for _ in range(3):
        with pytest.raises(ConnectionError, match=r"InjectFault\('db'\)"):
            await fault.call(down)
    assert down.calls == 0
    assert (fault.call_count, fault.injected) == (3, 3)


async def test_times_fails_the_first_calls_then_lets_them_through() -> None:
    """``times=3``: the first three calls fail, every later one reaches the downstream."""
    fault = InjectFault("db", error=ConnectionError, times=3)
    assert await outcomes(fault, 5) == ["fault"] * 3 + ["real 0"] * 2
    assert fault.injected == 3


async def test_calls_range_hits_exactly_those_call_numbers() -> None:
    """``calls=range(5, 10)`` fails calls 5 to 9 and no other."""
    fault = InjectFault("db", error=ConnectionError, calls=range(5, 10))
    seen = await outcomes(fault, 12)
    assert [i + 1 for i, o in enumerate(seen) if o == "fault"] == [5, 6, 7, 8, 9]


async def test_calls_predicate_selects_by_number() -> None:
    """A predicate on the call number selects the calls hit."""
    fault = InjectFault("db", error=ConnectionError, calls=lambda n: n % 3 == 1)
    seen = await outcomes(fault, 7)
    assert [i + 1 for i, o in enumerate(seen) if o == "fault"] == [1, 4, 7]


async def test_every_second_call_is_slow_in_virtual_time() -> None:
    """``every=2`` with latency: calls 2, 4, ... wait ``seconds`` on the loop clock."""
    slow = InjectLatency("tools", seconds=2.0, every=2)
    down = Downstream()
    durations = []
    for _ in range(4):
        start = now()
        assert await slow.call(down) == "real 0"
        durations.append(now() - start)
    assert durations == pytest.approx([0.0, 2.0, 0.0, 2.0])
    assert down.calls == 4


async def test_when_filters_and_numbers_only_matching_calls() -> None:
    """``when`` sees the call's arguments; the schedule counts only the calls it accepts."""
    fault = InjectFault("db", error=ConnectionError, when=lambda x: x > 0, times=1)
    down = Downstream()
    assert await fault.call(down, 0) == "real 0"
    with pytest.raises(ConnectionError):
        await fault.call(down, 5)  # the first matching call
    assert await fault.call(down, 6) == "real 6"
    assert (fault.call_count, fault.injected) == (3, 1)


async def test_same_seed_replays_the_same_random_hits() -> None:
    """Two injectors with one seed hit the same calls; ``seed=None`` records the one drawn."""
    first = InjectFault("db", error=ConnectionError, rate=0.5, seed=1234)
    second = InjectFault("db", error=ConnectionError, rate=0.5, seed=1234)
    pattern = await outcomes(first, 40)
    assert await outcomes(second, 40) == pattern
    assert 0 < pattern.count("fault") < 40
    drawn = InjectFault("db", error=ConnectionError, rate=0.5)
    replay = InjectFault("db", error=ConnectionError, rate=0.5, seed=drawn.seed)
    assert await outcomes(drawn, 40) == await outcomes(replay, 40)


async def test_rate_bounds() -> None:
    """``rate=0`` never hits, ``rate=1`` always does."""
    assert await outcomes(InjectFault("db", error=ConnectionError, rate=0), 5) == ["real 0"] * 5
    assert await outcomes(InjectFault("db", error=ConnectionError, rate=1), 5) == ["fault"] * 5


async def test_enabled_switch_bool_callable_and_setter() -> None:
    """``enabled`` may be a bool or a callable read on each call, and can be switched later."""
    switch = {"on": False}
    fault = InjectFault("db", error=ConnectionError, enabled=lambda: switch["on"])
    assert await outcomes(fault, 2) == ["real 0"] * 2
    switch["on"] = True
    assert await outcomes(fault, 1) == ["fault"]
    fault.enabled = False
    assert await outcomes(fault, 1) == ["real 0"]
    assert fault.call_count == 4
    with pytest.raises(ValueError, match="enabled must be a bool or a callable, got 'yes'"):
        fault.enabled = "yes"  # type: ignore[assignment]


async def test_disabled_calls_do_not_advance_the_schedule() -> None:
    """Calls while disabled are not numbered: ``times`` still hits the next enabled calls."""
    fault = InjectFault("db", error=ConnectionError, times=2, enabled=False)
    assert await outcomes(fault, 3) == ["real 0"] * 3
    fault.enabled = True
    assert await outcomes(fault, 3) == ["fault", "fault", "real 0"]


async def test_error_forms_class_instance_and_factory() -> None:
    """A class is built with a message, an instance is copied each time, a factory is called."""
    down = Downstream()
    with pytest.raises(TimeoutError, match="fault injected by InjectFault"):
        await InjectFault("a", error=TimeoutError).call(down)

    template = ConnectionError("reset by peer")
    by_instance = InjectFault("b", error=template)
    raised = []
    for _ in range(2):
        try:
            await by_instance.call(down)
        except ConnectionError as exc:
            exc.add_note("seen by the caller")
            raised.append(exc)
    assert raised[0] is not raised[1]
    assert raised[0] is not template
    assert [str(e) for e in raised] == ["reset by peer"] * 2
    assert raised[1].__notes__ == ["seen by the caller"]  # notes never pile up
    assert not hasattr(template, "__notes__")

    made = InjectFault("c", error=lambda: ValueError("made"))
    with pytest.raises(ValueError, match="made"):
        await made.call(down)
    wrong = InjectFault("d", error=lambda: "not an exception")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="returned 'not an exception'"):
        await wrong.call(down)
    assert down.calls == 0


async def test_result_answers_without_calling() -> None:
    """``InjectResult`` returns its value in place of the call on the calls it hits."""
    cached = InjectResult("cache", value="stale", times=2)
    down = Downstream()
    assert [await cached.call(down, 1) for _ in range(3)] == ["stale", "stale", "real 1"]
    assert down.calls == 1


async def test_retry_and_fallback_react_to_injected_faults() -> None:
    """In a pipeline, a retry recovers from a short outage and a fallback answers a long one."""
    retry = Retry("llm", attempts=3, backoff=Backoff.constant(1.0))
    short = Pipeline(
        Fallback(lambda exc: "fallback"), retry, InjectFault("x", error=ConnectionError, times=2)
    )
    start = now()
    assert await short.call(Downstream()) == "real 0"
    assert now() - start == pytest.approx(2.0)

    long = Pipeline(
        Fallback(lambda exc: "fallback"), retry, InjectFault("x", error=ConnectionError)
    )
    assert await long.call(Downstream()) == "fallback"


async def test_timeout_cuts_injected_latency() -> None:
    """A timeout outside an injected latency cancels it at its own deadline."""
    slow = Pipeline(Timeout(1.0), InjectLatency("slow", seconds=30.0))
    start = now()
    with pytest.raises(TimeoutExceeded):
        await slow.call(Downstream())
    assert now() - start == pytest.approx(1.0)


async def test_cancellation_during_injected_latency_propagates() -> None:
    """Cancelled while in injected latency, the call ends at once; the downstream never runs."""
    slow = InjectLatency("slow", seconds=10.0)
    down = Downstream()
    with anyio.move_on_after(1.0) as scope:
        await slow.call(down)
    assert scope.cancelled_caught
    assert down.calls == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": -0.1}, "rate must be a number in \\[0, 1\\], got -0.1"),
        ({"rate": 1.5}, "rate must be a number in \\[0, 1\\], got 1.5"),
        ({"rate": math.nan}, "rate must be a number in \\[0, 1\\], got nan"),
        ({"rate": True}, "rate must be a number in \\[0, 1\\], got True"),
        ({"times": -1}, "times must be an int >= 0, got -1"),
        ({"times": 1.5}, "times must be an int >= 0, got 1.5"),
        ({"every": 0}, "every must be an int >= 1, got 0"),
        ({"calls": "123"}, "calls must be a collection of call numbers or a predicate, got '123'"),
        ({"calls": 5}, "calls must be a collection of call numbers or a predicate, got 5"),
        ({"when": 3}, "when must be a predicate, got 3"),
        ({"enabled": "yes"}, "enabled must be a bool or a callable, got 'yes'"),
        ({"seed": "x"}, "seed must be an int or None, got 'x'"),
        ({"error": KeyboardInterrupt}, "error must be an Exception subclass"),
        ({"error": KeyboardInterrupt()}, "error must be an Exception, got KeyboardInterrupt"),
        ({"error": 42}, "error must be an Exception subclass, an instance or a factory, got 42"),
    ],
)
def test_bad_configuration_names_argument_and_value(kwargs: dict[str, Any], message: str) -> None:
    """Every bad option raises ``ValueError`` at construction naming it and its value."""
    options: dict[str, Any] = {"error": ConnectionError, **kwargs}
    with pytest.raises(ValueError, match=message):
        InjectFault("db", **options)


def test_bad_latency_and_unbuildable_errors() -> None:
    """Latency must be finite seconds >= 0; an error that cannot be built says to pass a factory."""
    with pytest.raises(ValueError, match="seconds must be a finite number of seconds >= 0, got -1"):
        InjectLatency("t", seconds=-1)
    with pytest.raises(ValueError, match="got inf"):
        InjectLatency("t", seconds=math.inf)

    class NeedsCode(Exception):
        def __init__(self, message: str, *, code: int) -> None:
            super().__init__(message)
            self.code = code

    with pytest.raises(ValueError, match=r"cannot be built from a message.*factory"):
        InjectFault("db", error=NeedsCode)
    with pytest.raises(ValueError, match=r"cannot be copied.*factory"):
        InjectFault("db", error=NeedsCode("x", code=1))
    InjectFault("db", error=lambda: NeedsCode("x", code=1))


def _model(
    accepted: list[bool],
    *,
    enabled: bool,
    calls: frozenset[int] | None,
    every: int | None,
    times: int | None,
    rate: float | None,
    seed: int,
) -> list[bool]:
    """The documented rule, written plainly: which calls are hit."""
    rng = random.Random(seed)
    hit, matched, injected = [], 0, 0
    for ok in accepted:
        if not (enabled and ok):
            hit.append(False)
            continue
        matched += 1
        chosen = (
            (calls is None or matched in calls)
            and (every is None or matched % every == 0)
            and (times is None or injected < times)
            and (rate is None or rng.random() < rate)
        )
        injected += chosen
        hit.append(chosen)
    return hit


@given(
    accepted=st.lists(st.booleans(), max_size=30),
    enabled=st.booleans(),
    calls=st.none() | st.frozensets(st.integers(1, 30)),
    every=st.none() | st.integers(1, 5),
    times=st.none() | st.integers(0, 10),
    rate=st.none() | st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
async def test_hits_match_the_model(
    accepted: list[bool],
    enabled: bool,
    calls: frozenset[int] | None,
    every: int | None,
    times: int | None,
    rate: float | None,
    seed: int,
) -> None:
    """For any schedule and any calls, exactly the calls the documented rule picks are hit."""
    fault = InjectResult(
        "model",
        value="hit",
        when=lambda i: accepted[i],
        enabled=enabled,
        calls=calls,
        every=every,
        times=times,
        rate=rate,
        seed=seed,
    )
    down = Downstream()
    seen = [await fault.call(down, i) == "hit" for i in range(len(accepted))]
    expected = _model(
        accepted, enabled=enabled, calls=calls, every=every, times=times, rate=rate, seed=seed
    )
    assert seen == expected
    assert (fault.call_count, fault.injected) == (len(accepted), sum(expected))
    assert down.calls == len(accepted) - sum(expected)
