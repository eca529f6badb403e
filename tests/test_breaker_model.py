"""The circuit breaker against a plain reference model of the contract (hypothesis, stateful).

The model keeps the recent outcomes as a plain list and recomputes every
number from it; the breaker under test keeps ring buffers and running totals.
Calls are coroutines driven by hand (``send``/``throw``), so a step can start
a call, finish any running call with any outcome, move the clock, or flip a
manual switch, in any interleaving: calls that outlive a state period, trials
cancelled mid-flight, idle gaps. After every step the state, the metrics, and
every admit/reject decision (with its reason and ``retry_after``) must agree.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from resilient import (
    CallRejected,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    Event,
    StateChanged,
    TimeWindow,
)
from resilient._time import now
from resilient.testing import current_clock

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """Counted as a failure (listed in ``failure_on``)."""


class Ignored(Boom):
    """Listed in ``ignore``: never recorded, although also a ``Boom``."""


class Other(Exception):
    """Outside ``failure_on``: the call counts as a success, the error propagates."""


class FakeCancel(BaseException):
    """Stands for a cancellation: any BaseException that is not an Exception."""


class _Gate:
    """Suspends the wrapped call until the test sends a value or throws into it."""

    def __await__(self) -> Generator[str, Any, Any]:
        return (yield "running")


async def operation() -> Any:
    return await _Gate()


# -- the reference model ---------------------------------------------------------


@dataclass
class Config:
    failure_rate_threshold: float
    slow_call_duration: float | None
    slow_call_rate_threshold: float
    window: tuple[str, float, float]  # ("count", n, 0) or ("time", seconds, bucket)
    minimum_calls: int
    consecutive_failures: int | None
    open_duration: float
    open_duration_multiplier: float
    open_duration_max: float | None
    half_open_max_calls: int
    half_open_max_duration: float | None
    failure_if: bool = True  # a returned "bad" counts as failed (else as a success)

    def build(self, observers: list[Callable[[Event], object]]) -> CircuitBreaker:
        kind, a, b = self.window
        window = CountWindow(int(a)) if kind == "count" else TimeWindow(a, bucket=b)
        return CircuitBreaker(
            "model",
            failure_rate_threshold=self.failure_rate_threshold,
            slow_call_duration=self.slow_call_duration,
            slow_call_rate_threshold=self.slow_call_rate_threshold,
            window=window,
            minimum_calls=self.minimum_calls,
            consecutive_failures=self.consecutive_failures,
            open_duration=self.open_duration,
            open_duration_multiplier=self.open_duration_multiplier,
            open_duration_max=self.open_duration_max,
            half_open_max_calls=self.half_open_max_calls,
            half_open_max_duration=self.half_open_max_duration,
            failure_on=(Boom,),
            ignore=(Ignored,),
            failure_if=(lambda value: value == "bad") if self.failure_if else None,
            observers=observers,
        )


@dataclass
class ModelCall:
    period: int
    start: float


@dataclass
class Model:
    """The contract in the plainest form: lists of outcomes, recomputed on every read."""

    cfg: Config
    state: str = "closed"
    period: int = 0
    outcomes: list[tuple[float, bool, bool]] = field(default_factory=list)  # window
    trials: list[tuple[bool, bool]] = field(default_factory=list)
    source: str = "window"  # what metrics show: "window" or "trials"
    tripped: list[tuple[bool, bool]] = field(default_factory=list)  # the window at the trip
    taken: int = 0
    first_trial: float | None = None
    opened_at: float = 0.0
    duration: float = 0.0
    consecutive: int = 0
    not_permitted: int = 0
    transitions: list[tuple[str, str]] = field(default_factory=list)

    def go(self, new: str) -> None:
        if new != self.state:
            self.transitions.append((self.state, new))
        self.state = new
        self.period += 1
        if new == "closed":
            self.outcomes = []
            self.consecutive = 0
            self.source = "window"
        if new == "half_open":
            self.trials = []
            self.taken = 0
            self.first_trial = None
            self.source = "trials"

    def backed_off(self) -> float:
        d = self.duration * self.cfg.open_duration_multiplier
        cap = self.cfg.open_duration_max
        return d if cap is None else min(d, cap)

    def window_now(self, t: float) -> list[tuple[float, bool, bool]]:
        kind, a, b = self.cfg.window
        if kind == "count":
            return self.outcomes[-int(a) :]
        return [o for o in self.outcomes if t < (int(o[0] // b) + 1) * b + a]

    def minimum(self) -> int:
        kind, a, _ = self.cfg.window
        return min(self.cfg.minimum_calls, int(a)) if kind == "count" else self.cfg.minimum_calls

    def advance(self, t: float) -> None:
        while True:
            if self.state == "open" and t >= self.opened_at + self.duration:
                self.go("half_open")
            elif self.state == "half_open" and self.first_trial is not None:
                deadline = self.first_trial + (
                    self.cfg.half_open_max_duration or self.cfg.open_duration
                )
                if t < deadline:
                    return
                self.duration = self.backed_off()
                self.opened_at = deadline
                self.go("open")
            else:
                return

    def start(self, t: float) -> ModelCall | tuple[str, float | None]:
        self.advance(t)
        if self.state == "open":
            self.not_permitted += 1
            return "open", self.opened_at + self.duration - t
        if self.state == "forced_open":
            self.not_permitted += 1
            return "forced_open", None
        if self.state == "half_open":
            if self.taken >= self.cfg.half_open_max_calls:
                self.not_permitted += 1
                return "half_open_full", None
            self.taken += 1
            if self.first_trial is None:
                self.first_trial = t
        return ModelCall(self.period, t)

    def trip(self, t: float, duration: float) -> None:
        if self.state == "closed":
            self.tripped = [(f, s) for _, f, s in self.window_now(t)]
        self.opened_at = t
        self.duration = duration
        self.go("open")

    def finish(self, call: ModelCall, t: float, outcome: str) -> None:
        """``outcome``: "failure", "success", "ignored" or "cancelled"."""
        self.advance(t)
        if call.period != self.period or self.state == "disabled":
            return  # stale (a disabled call was admitted with no period to record in)
        sd = self.cfg.slow_call_duration
        slow = sd is not None and t - call.start > sd
        failed = outcome == "failure"
        if outcome in ("ignored", "cancelled"):
            if self.state == "half_open":
                self.taken -= 1
                if self.taken == len(self.trials):  # no trial running: no timeout
                    self.first_trial = None
            return
        if self.state == "half_open":
            self.trials.append((failed, slow))
            n = len(self.trials)
            if n < self.cfg.half_open_max_calls and self.taken == n:
                self.first_trial = None  # no trial running: no timeout
            if n == self.cfg.half_open_max_calls:
                f = sum(x[0] for x in self.trials)
                s = sum(x[1] for x in self.trials)
                if (
                    f / n >= self.cfg.failure_rate_threshold
                    or s / n >= self.cfg.slow_call_rate_threshold
                ):
                    self.trip(t, self.backed_off())
                else:
                    self.go("closed")
            return
        assert self.state == "closed"
        self.outcomes.append((t, failed, slow))
        self.consecutive = self.consecutive + 1 if failed else 0
        limit = self.cfg.consecutive_failures
        if failed and limit is not None and self.consecutive >= limit:
            self.trip(t, self.cfg.open_duration)
            return
        window = self.window_now(t)
        n = len(window)
        if n >= self.minimum() and (
            sum(x[1] for x in window) / n >= self.cfg.failure_rate_threshold
            or sum(x[2] for x in window) / n >= self.cfg.slow_call_rate_threshold
        ):
            self.trip(t, self.cfg.open_duration)

    def metrics(self, t: float) -> tuple[float, float, int, int, int, int]:
        self.advance(t)
        if self.source == "trials":
            flags = list(self.trials)
        elif self.state == "open":
            flags = list(self.tripped)  # OPEN shows the window that tripped, unexpired
        else:
            flags = [(f, s) for _, f, s in self.window_now(t)]
        n = len(flags)
        f = sum(x[0] for x in flags)
        s = sum(x[1] for x in flags)
        if n == 0 or (self.state == "closed" and n < self.minimum()):
            return 0.0, 0.0, n, f, s, self.not_permitted
        return f / n, s / n, n, f, s, self.not_permitted


# -- the machine -------------------------------------------------------------------

durations = st.sampled_from([1.0, 2.5, 5.0])
configs = st.builds(
    Config,
    failure_rate_threshold=st.sampled_from([0.1, 1 / 3, 0.5, 1.0]),
    slow_call_duration=st.sampled_from([None, 1.0, 2.0]),
    slow_call_rate_threshold=st.sampled_from([0.5, 1.0]),
    window=st.just(("count", 0.0, 0.0)),  # replaced per test
    minimum_calls=st.integers(1, 6),
    consecutive_failures=st.sampled_from([None, 1, 2, 3]),
    open_duration=durations,
    open_duration_multiplier=st.sampled_from([1.0, 2.0]),
    open_duration_max=st.sampled_from([None, 8.0]),
    half_open_max_calls=st.integers(1, 3),
    half_open_max_duration=st.sampled_from([None, 2.0, 10.0]),
    failure_if=st.booleans(),
)
count_windows = st.tuples(st.just("count"), st.integers(1, 6).map(float), st.just(0.0))
time_windows = st.sampled_from(
    [("time", 2.0, 1.0), ("time", 5.0, 1.0), ("time", 3.0, 0.5), ("time", 4.0, 4.0)]
)
outcomes = st.sampled_from(["success", "failure", "ignored", "other", "bad", "cancel"])


class BreakerMachine(RuleBasedStateMachine):
    windows: st.SearchStrategy[tuple[str, float, float]] = count_windows
    observed = False
    via = "decorator"

    def __init__(self) -> None:
        super().__init__()
        self.running: list[tuple[Coroutine[Any, Any, Any], ModelCall]] = []
        self.events: list[Event] = []

    @initialize(cfg=configs, data=st.data())
    def setup(self, cfg: Config, data: st.DataObject) -> None:
        # The virtual clock runs on from one example to the next, and a time
        # window's buckets are aligned to the clock (bucket k covers
        # [k*b, (k+1)*b)): start every example at the same phase (a multiple
        # of every bucket used here; all times are sums of exact binary
        # fractions), so a replayed example meets the same bucket edges.
        t = now()
        current_clock().jump(math.ceil(t / 4.0) * 4.0 + 4.0 - t)
        cfg.window = data.draw(self.windows, label="window")
        self.model = Model(cfg)
        self.breaker = cfg.build([self.events.append] if self.observed else [])
        self.wrapped: Callable[[], Awaitable[Any]] = self.breaker(operation)

    def _new_call(self) -> Coroutine[Any, Any, Any]:
        if self.via == "decorator":
            return self.wrapped()  # type: ignore[return-value]
        return self.breaker.call(operation)

    @rule()
    def start_call(self) -> None:
        coro = self._new_call()
        expected = self.model.start(now())
        try:
            coro.send(None)
        except CircuitOpenError as exc:
            assert isinstance(expected, tuple), f"rejected, the model admits ({exc})"
            assert exc.retry_after == expected[1]
            if self.observed:
                last = self.events[-1]
                assert isinstance(last, CallRejected)
                assert last.reason == expected[0]
            return
        assert isinstance(expected, ModelCall), f"admitted, the model rejects: {expected}"
        self.running.append((coro, expected))

    @precondition(lambda self: self.running)
    @rule(data=st.data(), outcome=outcomes)
    def finish_call(self, data: st.DataObject, outcome: str) -> None:
        self._finish(data.draw(st.integers(0, len(self.running) - 1)), outcome)

    def _finish(self, i: int, outcome: str) -> None:
        coro, call = self.running.pop(i)
        t = now()
        if outcome in ("success", "bad"):
            with pytest.raises(StopIteration) as stop:
                coro.send(outcome)
            assert stop.value.value == outcome
            bad = outcome == "bad" and self.model.cfg.failure_if
            kind = "failure" if bad else "success"
        else:
            error: BaseException = {
                "failure": Boom(),
                "ignored": Ignored(),
                "other": Other(),
                "cancel": FakeCancel(),
            }[outcome]
            with pytest.raises(type(error)) as raised:
                coro.throw(error)
            assert raised.value is error  # passed through unchanged, the tripping call too
            kind = {"failure": "failure", "other": "success", "ignored": "ignored"}.get(
                outcome, "cancelled"
            )
        self.model.finish(call, t, kind)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5, 7.0, 3600.0]))
    def advance_clock(self, dt: float) -> None:
        current_clock().jump(dt)

    @rule(outcome=outcomes, dt=st.sampled_from([0.0, 0.0, 1.5, 3.0]))
    def whole_call(self, outcome: str, dt: float) -> None:
        """Start a call, let ``dt`` pass, finish it: the common case, one step."""
        before = len(self.running)
        self.start_call()
        if len(self.running) > before:
            current_clock().jump(dt)
            self._finish(len(self.running) - 1, outcome)

    @rule(op=st.sampled_from(["force_open", "disable", "reset"]))
    def manual(self, op: str) -> None:
        getattr(self.breaker, op)()
        if op == "reset":
            self.model.not_permitted = 0
            self.model.go("closed")
        else:
            new = {"force_open": "forced_open", "disable": "disabled"}[op]
            if self.model.state != new:
                self.model.go(new)

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "model"):
            return
        t = now()
        expected = self.model.metrics(t)
        assert self.breaker.state == CircuitState(self.model.state)
        m = self.breaker.metrics
        got = (
            m.failure_rate,
            m.slow_call_rate,
            m.calls,
            m.failed_calls,
            m.slow_calls,
            m.not_permitted_calls,
        )
        assert got == expected
        if self.observed:
            changes = [(e.old, e.new) for e in self.events if isinstance(e, StateChanged)]
            assert changes == self.model.transitions

    def teardown(self) -> None:
        for coro, _ in self.running:
            coro.close()


def machine(
    windows: st.SearchStrategy[tuple[str, float, float]], observed: bool, via: str
) -> type[BreakerMachine]:
    return type(
        "Machine", (BreakerMachine,), {"windows": windows, "observed": observed, "via": via}
    )


MODES = [
    pytest.param(False, "decorator", id="fast-decorator"),
    pytest.param(False, "call", id="fast-call"),
    pytest.param(True, "decorator", id="observed"),
]


@pytest.mark.parametrize(("observed", "via"), MODES)
async def test_count_window_breaker_matches_model(observed: bool, via: str) -> None:
    """With a CountWindow, state, rates and every admit/reject decision match the model."""
    run_state_machine_as_test(
        machine(count_windows, observed, via),
        settings=settings(max_examples=120, stateful_step_count=50, deadline=None),
    )


@pytest.mark.parametrize(("observed", "via"), MODES)
async def test_time_window_breaker_matches_model(observed: bool, via: str) -> None:
    """With a TimeWindow, state, rates and every admit/reject decision match the model."""
    run_state_machine_as_test(
        machine(time_windows, observed, via),
        settings=settings(max_examples=120, stateful_step_count=50, deadline=None),
    )
