"""Chaos soak: the full pipeline under faults, load and cancellation, with nothing lost.

Run it with ``python benchmarks/soak.py`` (1,000,000 calls on both anyio
backends), ``--quick`` for the CI size (50,000 calls), or ``--calls N``
(at least 20,000: shorter phases cannot show the breaker's cycles),
``--backend asyncio|trio|both``, ``--seed S``, ``--no-trace-memory``,
``--quiet-breaker`` (no observer on the breaker: its fast paths run). It
prints one table; the exit status is 1 when an invariant or a
reconciliation fails, and every failure is printed. Every random draw is
seeded: a run replays exactly on a given backend.

What runs, in virtual time (``resilient.testing``: a virtual-clock loop on
asyncio, trio's ``MockClock``), so a soak of minutes of traffic takes only
the CPU time of its calls:

- **the pipeline**, in the documented order: ``Fallback → Retry →
  CircuitBreaker → Bulkhead → Timeout``, and inside the timeout the fault
  injectors of :mod:`resilient.chaos` in front of a scripted downstream. A
  probe between the breaker and the bulkhead counts half-open trials.
- **the load**: ``concurrency`` (1,000) worker tasks, each pausing a random
  think time, then making one call, until ``calls`` calls have been made.
  Half the calls accept a fallback answer (a context variable read by the
  fallback's ``on`` predicate), so every outcome reaches the callers.
- **the faults**, in phases by share of the calls: healthy (20 %), 30 %
  failures (25 %), full outage (25 %: every attempt refused), recovery
  (30 %). Throughout, 1 % of attempts stall far past the timeout.
- **the cancellations**: 5 % of the callers are cancelled from outside (a
  separate task cancels their scope) at a random moment of their call: in a
  backoff sleep, in the bulkhead's queue, in the downstream, or too late.

Checked as the run goes: the bulkhead never holds more than its limit (read
from it, and counted inside it); a half-open period never has more trials
out than its cap. Checked at the end: every call accounted exactly once
(success, fallback answer, rejected open, rejected bulkhead full, timed out,
failed, cancelled), the ledger reconciles with the policies' own events and
counters, the Prometheus observer's counters and the fault injectors'
counts; no permit held, no call in flight, no task left; the breaker stayed
closed through healthy and degraded traffic, opened within its window after
the outage began, stayed open through it, and closed within its open
duration and trials after the recovery (then stayed closed); memory
(tracemalloc, sampled after a full collection) flat between the first tenth
of the calls after the ramp-up and the last tenth; and hardly any garbage
left in reference cycles (a frame holding the error whose traceback holds
the frame), which only the cycle collector frees.

``main(argv)`` is the entry point (``python -m benchmarks soak`` calls it);
:func:`run_soak` runs one soak and returns its :class:`Report`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import heapq
import math
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import anyio
from prometheus_client import CollectorRegistry

from resilient import (
    Backoff,
    Bulkhead,
    BulkheadFullError,
    CallFinished,
    CallRejected,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Event,
    Fallback,
    FallbackUsed,
    PermitAcquired,
    PermitReleased,
    Pipeline,
    Policy,
    Retry,
    RetryGaveUp,
    RetryScheduled,
    StateChanged,
    TimedOut,
    Timeout,
    TimeoutExceeded,
    TimeWindow,
    call_context,
)
from resilient.chaos import InjectFault, InjectLatency
from resilient.observe.prometheus import PrometheusObserver
from resilient.testing import virtual_backend_options

__all__ = ["PHASES", "Config", "Report", "main", "run_soak"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_CALLS = 1_000_000
QUICK_CALLS = 50_000

# The scenario: (phase, share of the calls). The phase of an attempt is the
# phase of the most recently issued call when the attempt reaches the faults.
PHASES: tuple[tuple[str, float], ...] = (
    ("healthy", 0.20),
    ("degraded", 0.25),
    ("outage", 0.25),
    ("recovery", 0.30),
)
HEALTHY, DEGRADED, OUTAGE, RECOVERY = range(4)

# How a call ended, as the caller saw it (ledger codes; 0: not ended yet).
OUTCOMES = (
    "success",
    "fallback",
    "rejected_open",
    "rejected_bulkhead",
    "timed_out",
    "failed",
    "cancelled",
    "unexpected",
)
SUCCESS, FALLBACK, REJECTED_OPEN, REJECTED_BULKHEAD, TIMED_OUT, FAILED, CANCELLED, UNEXPECTED = (
    range(1, len(OUTCOMES) + 1)
)


@dataclass(frozen=True)
class Config:
    """One soak's shape. Times are virtual seconds on the loop clock."""

    calls: int = DEFAULT_CALLS
    """Calls made in all."""
    concurrency: int = 1_000
    """Worker tasks, each making one call at a time."""
    seed: int = 0
    """Seeds every random draw (worker pauses, latencies, faults, jitter)."""
    think: float = 0.1
    """Mean pause of a worker between two calls (uniform in [0, 2 * think])."""
    latency: tuple[float, float] = (0.001, 0.02)
    """The downstream's answer time, uniform in this range."""
    spike_rate: float = 0.01
    """Share of attempts that stall for ``spike`` seconds, past the timeout."""
    spike: float = 0.5
    """How long a stalled attempt would take (the timeout cuts it at ``timeout``)."""
    degraded_failure_rate: float = 0.3
    """Share of attempts refused (``ConnectionError``) in the degraded phase."""
    refusal_delay: float = 0.002
    """In the outage, every attempt is refused after this long (a connection attempt)."""
    cancel_rate: float = 0.05
    """Share of callers cancelled from outside..."""
    cancel_within: float = 0.012
    """...at a moment uniform in this many seconds after their call starts."""
    trial_cancel_rate: float = 0.5
    """Share of half-open trials whose caller is cancelled (also from outside, as above)."""
    fallback_share: float = 0.5
    """Share of calls that accept a fallback answer..."""
    fallback_latency: float = 0.001
    """...which takes this long to look up (a cancellation can land there too)."""
    timeout: float = 0.05
    """From here to ``slow_call_duration``: the policies' own options, as they take them."""
    max_concurrent: int = 90
    max_wait: float = 0.005
    max_queue: int = 40
    attempts: int = 3
    backoff_initial: float = 0.005
    backoff_max: float = 0.05
    window: float = 0.25
    bucket: float = 0.05
    minimum_calls: int = 50
    failure_rate_threshold: float = 0.5
    open_duration: float = 0.1
    open_duration_multiplier: float = 2.0
    open_duration_max: float = 0.4
    half_open_max_calls: int = 5
    slow_call_duration: float = 0.015
    """Slow calls are counted (the slow-rate threshold stays at 1.0: they never trip it)."""
    observe_breaker: bool = True
    """Observers on the breaker; without, it runs its fast paths and its transitions are
    polled by the monitor, and the breaker's events are not reconciled (the probe's counts are)."""
    tick: float = 0.005
    """How often the monitor checks the bulkhead."""
    trace_memory: bool = True
    """Run under tracemalloc (the memory check; it slows the run down about 3.5 times)."""
    memory_samples: int = 8
    """Memory samples (each after a full garbage collection) in each of the two tenths."""
    memory_slack: int = 512 * 1024
    """Bytes the last tenth may sit above the first tenth (besides growth per call)..."""
    memory_per_call: float = 2.0
    """...plus this many bytes per call."""
    max_cycle_garbage: float = 0.25
    """Objects per call the cycle collector may free (errors caught in reference cycles)."""

    @property
    def attempt_max(self) -> float:
        """The longest an attempt can hold a breaker permit: the bulkhead wait plus the timeout."""
        return self.max_wait + self.timeout


@dataclass(frozen=True, slots=True)
class FallbackAnswer:
    """What the fallback answers: the kind of error it replaced."""

    replaced: str


_ANSWERS = {k: FallbackAnswer(k) for k in ("open", "bulkhead", "timeout", "failed", "other")}

# Whether the running call accepts a fallback answer (set by each worker per call).
_wants_fallback: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "soak_wants_fallback", default=False
)
# The running call's caller, whom the monkey may be asked to cancel.
_caller: contextvars.ContextVar[_Victim | None] = contextvars.ContextVar(
    "soak_caller", default=None
)


def _asyncio_task() -> asyncio.Task[Any] | None:
    """The running asyncio task; ``None`` on trio."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no asyncio loop running
        return None


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, CircuitOpenError):
        return "open"
    if isinstance(exc, BulkheadFullError):
        return "bulkhead"
    if isinstance(exc, TimeoutExceeded):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "failed"
    return "other"


def _fallback_wanted(exc: BaseException) -> bool:
    return _wants_fallback.get()


class Violations:
    """Every broken invariant, counted by kind; the first messages of each are kept."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.messages: list[str] = []

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= 5:
            self.messages.append(f"{kind}: {message}")

    def check(self, ok: bool, kind: str, message: str) -> None:
        if not ok:
            self.add(kind, message)


class Tally:
    """An observer counting every event by its facts; keeps the breaker's transitions.

    Keys: ``("finished", kind, outcome, error)``, ``("slow", kind)`` (slow
    successes), ``("rejected", kind, reason)``,
    ``("changed", old, new)``, ``("retry", error)``, ``("gave_up", reason,
    error)``, ``("timed_out",)``, ``("fallback", error)``, ``("acquired",)``,
    ``("released",)``.
    """

    def __init__(self, watch: BreakerWatch) -> None:
        self.counts: Counter[tuple[str | None, ...]] = Counter()
        self._watch = watch

    def __call__(self, e: Event) -> None:
        t = type(e)
        key: tuple[str | None, ...]
        if t is CallFinished:
            assert isinstance(e, CallFinished)
            key = ("finished", e.kind, e.outcome, e.error)
            if e.slow and e.outcome == "success":
                self.counts["slow", e.kind] += 1
        elif t is CallRejected:
            assert isinstance(e, CallRejected)
            key = ("rejected", e.kind, e.reason)
        elif t is StateChanged:
            assert isinstance(e, StateChanged)
            key = ("changed", e.old, e.new)
            self._watch.changed(e.old, e.new)
        elif t is RetryScheduled:
            assert isinstance(e, RetryScheduled)
            key = ("retry", e.error)
        elif t is RetryGaveUp:
            assert isinstance(e, RetryGaveUp)
            key = ("gave_up", e.reason, e.error)
        elif t is TimedOut:
            key = ("timed_out",)
        elif t is FallbackUsed:
            assert isinstance(e, FallbackUsed)
            key = ("fallback", e.error)
        elif t is PermitAcquired:
            key = ("acquired",)
        elif t is PermitReleased:
            key = ("released",)
        else:
            key = ("other", t.__name__)
        self.counts[key] += 1

    def n(self, *prefix: str | None) -> int:
        """Events whose key starts with ``prefix``."""
        k = len(prefix)
        return sum(c for key, c in self.counts.items() if key[:k] == prefix)


class BreakerWatch:
    """The breaker's transitions ``(time, old, new)``: from its events, or polled.

    ``period`` goes up at every transition seen. Polling sees a state at each
    tick, so it misses the short HALF_OPEN between two OPEN periods of an
    outage (trials fail at once): polled transitions are only good for the
    long phases.
    """

    def __init__(self) -> None:
        self.transitions: list[tuple[float, str, str]] = []
        self.state = "closed"
        self.period = 0

    def changed(self, old: str, new: str) -> None:
        self.transitions.append((anyio.current_time(), old, new))
        self.state = new
        self.period += 1

    def poll(self, breaker: CircuitBreaker) -> None:
        state = breaker.state.value
        if state != self.state:
            self.changed(self.state, state)


class Probe(Policy):
    """Between the breaker and the bulkhead: what the breaker let through, and its trials.

    ``exits`` counts how the calls it let through ended. The breaker admits
    a call and starts it without an await in between, so the probe sees the
    state that admitted it. A half-open trial stays out until its outcome is
    recorded; one that ends ignored (a bulkhead rejection) or cancelled gives
    its permit back and may be replaced, so the cap bounds the trials out at
    once in a period, not those admitted.

    ``period()`` names the breaker's current period: the number of
    transitions its events announced, or, for a breaker nobody observes, its
    internal state object (replaced whole at each transition; polling its
    public ``state`` cannot tell two OPEN periods apart).
    """

    kind = "soak_probe"

    def __init__(
        self,
        breaker: CircuitBreaker,
        period: Callable[[], object],
        cap: int,
        violations: Violations,
        on_trial: Callable[[], None],
    ) -> None:
        super().__init__("soak-probe")
        self._breaker = breaker
        self._on_trial = on_trial
        self._current_period = period
        self._cap = cap
        self._violations = violations
        self._period: object = None
        self.exits: Counter[str] = Counter()
        self.out = 0  # trials out in the current half-open period
        self.peak = 0
        self.admitted = 0
        self.given_back = 0  # trials cancelled or rejected by the bulkhead

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        trial = self._breaker.state is CircuitState.HALF_OPEN
        period = self._current_period()
        if trial:
            if period != self._period:
                self._period = period
                self.out = 0
            self.out += 1
            self.admitted += 1
            self.peak = max(self.peak, self.out)
            self._violations.check(
                self.out <= self._cap,
                "half_open_cap",
                f"{self.out} trials out in one half-open period (cap {self._cap})",
            )
            self._on_trial()
        exits = self.exits
        try:
            result = await fn(*args, **kwargs)
        except BulkheadFullError:  # ignored by the breaker: a trial's permit is returned
            exits["bulkhead"] += 1
            if trial:
                self._give_back(period)
            raise
        except TimeoutExceeded:
            exits["timeout"] += 1
            raise
        except ConnectionError:
            exits["refused"] += 1
            raise
        except Exception:
            exits["other"] += 1
            raise
        except BaseException:  # cancelled: a trial's permit is returned
            exits["cancelled"] += 1
            if trial:
                self._give_back(period)
            raise
        exits["returned"] += 1
        return result

    def _give_back(self, period: object) -> None:
        self.given_back += 1
        if self._period == period and self._current_period() == period:
            self.out -= 1


class Inside(Policy):
    """Right past the bulkhead: the calls holding a permit, counted as they run.

    The bulkhead's limit is checked here by counting, not only by reading its
    ``active``: no more than ``max_concurrent`` calls may be inside at once.
    """

    kind = "soak_inside"

    def __init__(self, bulkhead: Bulkhead, violations: Violations) -> None:
        super().__init__("soak-inside")
        self._bulkhead = bulkhead
        self._limit = bulkhead.max_concurrent
        self._violations = violations
        self.running = 0
        self.peak = 0
        self.entered = 0
        self.cancelled = 0

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self.entered += 1
        self.running = running = self.running + 1
        if running > self.peak:
            self.peak = running
            self._violations.check(
                running <= self._limit,
                "bulkhead_limit",
                f"{running} calls inside a bulkhead of {self._limit}",
            )
        active = self._bulkhead.active
        if active > self._limit or active < running:
            self._violations.add("bulkhead_active", f"active={active} with {running} calls inside")
        try:
            return await fn(*args, **kwargs)
        except Exception:
            raise
        except BaseException:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


class Downstream:
    """The scripted service: answers its call's id after a random latency."""

    def __init__(self, config: Config) -> None:
        self._low, self._high = config.latency
        self._rng = random.Random(config.seed + 1)
        self.returned = 0

    async def __call__(self, i: int) -> int:
        await anyio.sleep(self._rng.uniform(self._low, self._high))
        self.returned += 1
        return i


class _Victim:
    __slots__ = ("scope",)

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope: anyio.CancelScope | None = scope


class Monkey:
    """Cancels callers from outside: a task of its own cancels each victim's scope when due.

    It sleeps until the earliest time due; scheduling an earlier one moves
    its wake-up (the deadline of the scope it sleeps in) forward, so every
    cancellation comes at its own random instant.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _Victim]] = []
        self._seq = 0
        self._nap: anyio.CancelScope | None = None
        self.fired = 0  # cancellations sent to calls still running

    def schedule(self, when: float, victim: _Victim) -> None:
        self._seq += 1
        heapq.heappush(self._due, (when, self._seq, victim))
        nap = self._nap
        if nap is not None and when < nap.deadline:
            nap.deadline = when

    async def run(self) -> None:
        due = self._due
        while True:
            with anyio.CancelScope(deadline=due[0][0] if due else math.inf) as self._nap:
                await anyio.sleep_forever()
            self._nap = None
            now = anyio.current_time()
            while due and due[0][0] <= now:
                victim = heapq.heappop(due)[2]
                scope = victim.scope
                if scope is not None:  # else: the call ended, or was cancelled already
                    victim.scope = None
                    scope.cancel()
                    self.fired += 1


@dataclass
class Report:
    """One soak's figures and its broken invariants (``violations``: empty when all held)."""

    backend: str
    config: Config
    wall: float = 0.0
    virtual: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    fallback_for: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    retries: int = 0
    cancels_targeted: int = 0
    trial_cancels_targeted: int = 0
    cancels_fired: int = 0
    cancelled_in: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    transitions: dict[str, int] = field(default_factory=dict)
    phase_starts: list[float] = field(default_factory=list)
    opened_after: float | None = None
    closed_after: float | None = None
    bulkhead_peak: int = 0
    bulkhead_inside_peak: int = 0
    trials_peak: int = 0
    trials_admitted: int = 0
    trials_given_back: int = 0
    memory_first: int = 0
    memory_last: int = 0
    memory_peak: int = 0
    gc_collected: int = 0
    violations: list[str] = field(default_factory=list)
    violation_counts: dict[str, int] = field(default_factory=dict)

    @property
    def calls_per_second(self) -> float:
        return self.config.calls / self.wall if self.wall else 0.0


class Soak:
    """One run: builds the pipeline, drives the load, checks as it goes and at the end."""

    def __init__(self, config: Config, backend: str) -> None:
        self.config = c = config
        self.report = Report(backend, config)
        self.violations = Violations()
        self.watch = BreakerWatch()
        self.tally = Tally(self.watch)
        self.registry = CollectorRegistry()
        self.prometheus = PrometheusObserver(self.registry)
        observers = (self.tally, self.prometheus)
        self.fallback = Fallback(
            self.answer, on=_fallback_wanted, name="soak-fallback", observers=observers
        )
        self.fallback_cancelled: Counter[str] = Counter()  # by the kind of error replaced
        self.retry = Retry(
            "soak-retry",
            attempts=c.attempts,
            backoff=Backoff.exponential(c.backoff_initial, maximum=c.backoff_max),
            observers=observers,
            rng=random.Random(c.seed + 2),
        )
        self.breaker = CircuitBreaker(
            "soak-breaker",
            failure_rate_threshold=c.failure_rate_threshold,
            window=TimeWindow(c.window, bucket=c.bucket),
            minimum_calls=c.minimum_calls,
            open_duration=c.open_duration,
            open_duration_multiplier=c.open_duration_multiplier,
            open_duration_max=c.open_duration_max,
            half_open_max_calls=c.half_open_max_calls,
            slow_call_duration=c.slow_call_duration,
            ignore=(BulkheadFullError,),  # a full bulkhead says nothing about the downstream
            # Unobserved, it takes its one-check fast paths (CLOSED, OPEN rejections).
            observers=observers if c.observe_breaker else (),
        )
        breaker, watch = self.breaker, self.watch
        # Unobserved, a period is the breaker's internal state object (see Probe).
        period: Callable[[], object] = (
            (lambda: watch.period) if c.observe_breaker else (lambda: breaker._state)
        )
        self.monkey = Monkey()
        self.probe = Probe(
            breaker, period, c.half_open_max_calls, self.violations, self.maybe_cancel_trial
        )
        self.bulkhead = Bulkhead(
            "soak-bulkhead",
            c.max_concurrent,
            max_wait=c.max_wait,
            max_queue=c.max_queue,
            observers=observers,
        )
        self.timeout = Timeout(c.timeout, name="soak-timeout", observers=observers)
        self.phase = HEALTHY
        self.spikes = InjectLatency(
            "soak-spikes", seconds=c.spike, rate=c.spike_rate, seed=c.seed + 3
        )
        self.degraded = InjectFault(
            "soak-degraded",
            error=ConnectionError,
            rate=c.degraded_failure_rate,
            enabled=lambda: self.phase == DEGRADED,
            seed=c.seed + 4,
        )
        self.connecting = InjectLatency(
            "soak-connecting", seconds=c.refusal_delay, enabled=lambda: self.phase == OUTAGE
        )
        self.outage = InjectFault(
            "soak-outage", error=ConnectionError, enabled=lambda: self.phase == OUTAGE
        )
        self.inside = Inside(self.bulkhead, self.violations)
        self.downstream = Downstream(c)
        self.pipeline = Pipeline(
            self.fallback,
            self.retry,
            self.breaker,
            self.probe,
            self.bulkhead,
            self.inside,
            self.timeout,
            self.spikes,
            self.degraded,
            self.connecting,
            self.outage,
            name="soak",
        )
        self.call = self.pipeline(self.downstream)
        self.rng = random.Random(c.seed)
        self.codes = bytearray(c.calls)
        self.counts = [0] * (len(OUTCOMES) + 1)
        self.fallback_for: Counter[str] = Counter()
        self.attempts = 0
        self.issued = 0
        self.in_flight = 0
        bounds, total = [], 0.0
        for _, share in PHASES[:-1]:
            total += share
            bounds.append(round(c.calls * total))
        self.bounds = [*bounds, c.calls + 1]  # call ids that start each next phase
        self.phase_starts: list[float] = []
        # Memory samples: at these numbers of calls issued, in the first tenth
        # of the calls after the ramp-up (each worker's first two calls, while
        # the calls in flight still grow) and in the last tenth.
        k, tenth = c.memory_samples, c.calls // 10
        ramp = 2 * c.concurrency
        first = [ramp + tenth * j // k for j in range(k)]
        last = [c.calls - tenth + tenth * j // k for j in range(k)]
        self.sample_at = [*first, *last] if c.trace_memory else []
        self.samples: list[tuple[int, int]] = []  # (calls issued, traced bytes)
        self.active_peak = 0

    # -- the load ---------------------------------------------------------------

    def maybe_cancel_trial(self) -> None:
        """A half-open trial was admitted: have its caller cancelled, now and then."""
        c = self.config
        victim = _caller.get()
        if victim is not None and self.rng.random() < c.trial_cancel_rate:
            self.report.trial_cancels_targeted += 1
            when = anyio.current_time() + self.rng.uniform(0.0, c.cancel_within)
            self.monkey.schedule(when, victim)

    async def answer(self, exc: Exception) -> FallbackAnswer:
        """The fallback's handler: a cached answer, looked up in ``fallback_latency`` seconds."""
        kind = _error_kind(exc)
        try:
            await anyio.sleep(self.config.fallback_latency)
        except BaseException:  # cancelled while looking it up
            self.fallback_cancelled[kind] += 1
            raise
        return _ANSWERS[kind]

    async def worker(self) -> None:
        c = self.config
        rng = self.rng
        think = 2.0 * c.think
        call = self.call
        codes = self.codes
        task = _asyncio_task()  # None on trio
        while True:
            await anyio.sleep(rng.uniform(0.0, think))
            i = self.issued
            if i >= c.calls:
                return
            self.issued = i + 1
            if i >= self.bounds[self.phase]:
                self.phase += 1
                self.phase_starts.append(anyio.current_time())
            _wants_fallback.set(rng.random() < c.fallback_share)
            scope = anyio.CancelScope()
            victim = _Victim(scope)
            _caller.set(victim)
            if rng.random() < c.cancel_rate:
                self.report.cancels_targeted += 1
                self.monkey.schedule(
                    anyio.current_time() + rng.uniform(0.0, c.cancel_within), victim
                )
            code = 0
            self.in_flight += 1
            with call_context() as ctx, scope:
                try:
                    result: object = await call(i)
                except CircuitOpenError:
                    code = REJECTED_OPEN
                except BulkheadFullError:
                    code = REJECTED_BULKHEAD
                except TimeoutExceeded:
                    code = TIMED_OUT
                except ConnectionError:
                    code = FAILED
                except Exception as exc:
                    code = UNEXPECTED
                    self.violations.add("unexpected", f"call {i} raised {exc!r}")
                else:
                    if type(result) is FallbackAnswer:
                        code = FALLBACK
                        self.fallback_for[result.replaced] += 1
                    elif result == i:
                        code = SUCCESS
                    else:
                        code = UNEXPECTED
                        self.violations.add("unexpected", f"call {i} returned {result!r}")
            self.in_flight -= 1
            victim.scope = None
            if task is not None and task.cancelling():
                # A cancellation requested of the task and never taken back
                # (task.uncancel) would cancel its next await, outside the call.
                self.violations.add(
                    "cancel_state", f"call {i} left its task cancelling ({task.cancelling()})"
                )
                while task.uncancel():
                    pass
            if scope.cancelled_caught:
                if code:
                    self.violations.add("ledger", f"call {i} ended as {code} and cancelled")
                code = CANCELLED
            self.attempts += ctx.attempt
            if codes[i]:
                self.violations.add("ledger", f"call {i} accounted twice")
            codes[i] = code
            self.counts[code] += 1

    async def monitor(self) -> None:
        """Every ``tick``: the bulkhead's own figures, the breaker's state if unobserved, memory."""
        c = self.config
        bulkhead = self.bulkhead
        check = self.violations.check
        samples = self.samples
        sample_at = self.sample_at
        while True:
            active, waiting = bulkhead.active, bulkhead.waiting
            self.active_peak = max(self.active_peak, active)
            check(0 <= active <= c.max_concurrent, "bulkhead_active", f"active={active}")
            check(waiting <= c.max_queue, "bulkhead_queue", f"waiting={waiting}")
            check(
                not waiting or active == c.max_concurrent,
                "bulkhead_idle_waiters",
                f"{waiting} waiting with active={active}",
            )
            if not c.observe_breaker:
                self.watch.poll(self.breaker)
            if sample_at and self.issued >= sample_at[0]:
                del sample_at[0]
                # Garbage in reference cycles is not a leak: collect it first.
                gc.collect()
                samples.append((self.issued, tracemalloc.get_traced_memory()[0]))
            await anyio.sleep(c.tick)

    async def main(self) -> None:
        baseline = len(anyio.get_running_tasks())
        start = anyio.current_time()
        self.phase_starts.append(start)
        async with anyio.create_task_group() as helpers:
            helpers.start_soon(self.monkey.run)
            helpers.start_soon(self.monitor)
            async with anyio.create_task_group() as workers:
                for _ in range(self.config.concurrency):
                    workers.start_soon(self.worker)
            helpers.cancel_scope.cancel()
        self.report.virtual = anyio.current_time() - start
        left = len(anyio.get_running_tasks()) - baseline
        self.violations.check(left == 0, "tasks_left", f"{left} tasks still running")
        self.check_end()

    # -- the end ----------------------------------------------------------------

    def check_end(self) -> None:
        c = self.config
        v = self.violations
        t = self.tally
        r = self.report
        n = dict(zip(OUTCOMES, self.counts[1:], strict=True))
        r.outcomes = n
        r.fallback_for = dict(self.fallback_for)
        r.attempts = self.attempts
        r.retries = t.n("retry")
        r.cancels_fired = self.monkey.fired
        r.rejections = {
            reason: t.n("rejected", kind, reason)
            for kind, reasons in (
                ("circuit_breaker", ("open", "half_open_full")),
                ("bulkhead", ("queue_full", "max_wait")),
            )
            for reason in reasons
        }
        r.phase_starts = list(self.phase_starts)
        r.bulkhead_peak = self.active_peak
        r.bulkhead_inside_peak = self.inside.peak
        r.trials_peak = self.probe.peak
        r.trials_admitted = self.probe.admitted
        r.trials_given_back = self.probe.given_back

        def same(what: str, *values: int) -> None:
            v.check(len(set(values)) == 1, "reconcile", f"{what}: {values}")

        # Every call exactly once.
        missing = self.codes.count(0)
        v.check(missing == 0, "ledger", f"{missing} calls never accounted")
        same("calls issued, accounted", self.issued, sum(self.counts), c.calls)
        v.check(n["unexpected"] == 0, "ledger", f"{n['unexpected']} unexpected outcomes")

        # The end state: nothing held, nothing running.
        b = self.bulkhead
        v.check(b.active == 0 and b.waiting == 0, "end", f"bulkhead {b.active}/{b.waiting}")
        v.check(self.in_flight == 0, "end", f"{self.in_flight} calls in flight")
        v.check(self.inside.running == 0, "end", f"{self.inside.running} calls hold permits")

        # fmt: off
        # The ledger against what the breaker let through (the probe) and the
        # breaker's own count of rejections.
        # A call whose error went to the fallback ended as its answer, or as
        # cancelled if the lookup was cancelled: fb counts both, by error.
        fb = self.fallback_for + self.fallback_cancelled
        exits = self.probe.exits
        rejected_open = n["rejected_open"] + fb["open"]  # open rejections end a call at once
        not_permitted = self.breaker.metrics.not_permitted_calls
        let_through = sum(exits.values())
        same("breaker rejections: ledger, metrics.not_permitted_calls",
             rejected_open, not_permitted)
        same("attempts: ledger, rejected + let through",
             self.attempts, not_permitted + let_through)
        same("successes: ledger, downstream answers, let through and answered",
             n["success"], self.downstream.returned, exits["returned"])
        same("refusals: injected, let through and refused",
             self.degraded.injected + self.outage.injected, exits["refused"])
        v.check(exits["other"] == 0, "reconcile", f"{exits['other']} unexpected errors")
        # A cancelled call was cancelled past the breaker, in a backoff sleep
        # (a retry scheduled but never attempted) or in the fallback's lookup;
        # nowhere else awaits.
        in_backoff = r.retries - (self.attempts - c.calls)
        in_fallback = self.fallback_cancelled.total()
        same("cancellations: ledger, let through and cancelled + in backoff + in fallback",
             n["cancelled"], exits["cancelled"] + in_backoff + in_fallback)
        r.cancelled_in = {
            "backoff": in_backoff,
            "queue": exits["cancelled"] - self.inside.cancelled,
            "permit": self.inside.cancelled,
            "fallback": in_fallback,
        }
        # Cancellations come at random instants, never at the very instant a
        # call ends: each one sent to a running call must end it as cancelled.
        same("cancellations: sent to running calls, ledger", self.monkey.fired, n["cancelled"])

        # The ledger against the events.
        same("fallback answers: ledger, FallbackUsed", n["fallback"], t.n("fallback"))
        bulkhead_rejected = t.n("rejected", "bulkhead")
        same("bulkhead rejections: ledger (bulkhead + fallback for bulkhead), CallRejected, "
             "let through and rejected",
             n["rejected_bulkhead"] + fb["bulkhead"], bulkhead_rejected, exits["bulkhead"])
        same("timeouts: TimedOut, let through and timed out", t.n("timed_out"), exits["timeout"])
        same("calls timed out: ledger (timed out + fallback for timeout), RetryGaveUp",
             n["timed_out"] + fb["timeout"], t.n("gave_up", "attempts", "TimeoutExceeded"))
        same("calls failed: ledger (failed + fallback for failed), RetryGaveUp",
             n["failed"] + fb["failed"], t.n("gave_up", "attempts", "ConnectionError"))
        same("permits: acquired, released, calls inside, calls through the timeout",
             t.n("acquired"), t.n("released"), self.inside.entered, self.spikes.call_count)
        breaker_rejected = t.n("rejected", "circuit_breaker")
        breaker_finished = t.n("finished", "circuit_breaker")
        if c.observe_breaker:
            same("breaker: rejections, CallRejected", rejected_open, breaker_rejected)
            same("breaker: let through, CallFinished", let_through, breaker_finished)
            for outcome, exit_kinds in (
                ("success", ("returned",)),
                ("failure", ("refused", "timeout")),
                ("ignored", ("bulkhead",)),
                ("cancelled", ("cancelled",)),
            ):
                same(f"breaker: {outcome}, let through",
                     t.n("finished", "circuit_breaker", outcome),
                     sum(exits[k] for k in exit_kinds))
            same("breaker: timeouts", exits["timeout"],
                 t.n("finished", "circuit_breaker", "failure", "TimeoutExceeded"))

        # The events against Prometheus.
        reg = self.registry

        def prom(metric: str, /, **labels: str) -> int:
            value = reg.get_sample_value(metric, labels)
            return 0 if value is None else round(value)

        calls = "resilient_calls_total"
        same(
            "prometheus fallbacks",
            n["fallback"],
            prom(calls, kind="fallback", name="soak-fallback", outcome="fallback"),
            prom("resilient_fallbacks_total", kind="fallback", name="soak-fallback",
                 strategy="soak-fallback"),
        )
        if c.observe_breaker:
            slow = t.n("slow", "circuit_breaker")
            for outcome, count in (
                ("success", t.n("finished", "circuit_breaker", "success") - slow),
                ("slow", slow),
                ("failure", t.n("finished", "circuit_breaker", "failure")),
                ("ignored", t.n("finished", "circuit_breaker", "ignored")),
                ("cancelled", t.n("finished", "circuit_breaker", "cancelled")),
                ("rejected", breaker_rejected),
            ):
                same(f"prometheus breaker {outcome}", count,
                     prom(calls, kind="circuit_breaker", name="soak-breaker", outcome=outcome))
            for reason in ("open", "half_open_full"):
                same(f"prometheus breaker rejections {reason}",
                     t.n("rejected", "circuit_breaker", reason),
                     prom("resilient_rejections_total", kind="circuit_breaker",
                          name="soak-breaker", reason=reason))
            same("prometheus breaker durations", breaker_finished,
                 prom("resilient_call_duration_seconds_count", kind="circuit_breaker",
                      name="soak-breaker"))
        for reason in ("queue_full", "max_wait"):
            same(f"prometheus bulkhead {reason}",
                 t.n("rejected", "bulkhead", reason),
                 prom("resilient_rejections_total", kind="bulkhead", name="soak-bulkhead",
                      reason=reason))
        same("prometheus timeouts", t.n("timed_out"),
             prom(calls, kind="timeout", name="soak-timeout", outcome="timeout"))
        retries = sum(
            prom("resilient_retries_total", name="soak-retry", error=e)
            for e in ("ConnectionError", "TimeoutExceeded")
        )
        same("prometheus retries", r.retries, retries)
        same("prometheus give-ups", t.n("gave_up"),
             prom("resilient_retry_give_ups_total", name="soak-retry", reason="attempts"))
        pairs = Counter((old, new) for _, old, new in self.watch.transitions)
        r.transitions = {f"{old}->{new}": k for (old, new), k in sorted(pairs.items())}
        if c.observe_breaker:
            for (old, new), k in pairs.items():
                same(f"prometheus transitions {old}->{new}", k,
                     prom("resilient_circuit_breaker_transitions_total", name="soak-breaker",
                          from_state=old, to_state=new))
        for gauge in ("resilient_bulkhead_active", "resilient_bulkhead_waiting"):
            same(f"prometheus {gauge} at the end", 0, prom(gauge, name="soak-bulkhead"))
        # fmt: on

        self.check_breaker()
        self.check_memory()

    def check_breaker(self) -> None:
        """The breaker follows the outage: closed before it, open in it, closed after it."""
        c = self.config
        v = self.violations
        r = self.report
        transitions = self.watch.transitions
        starts = self.phase_starts
        if len(starts) < len(PHASES):
            v.add("breaker", f"only {len(starts)} phases ran")
            return
        outage, recovery = starts[OUTAGE], starts[RECOVERY]
        before = [tr for tr in transitions if tr[0] < outage]
        v.check(not before, "breaker", f"transitions before the outage: {before[:3]}")
        # Every attempt that started in the outage fails: once the window
        # holds nothing older, the failure rate is 100 %. Attempts started
        # before it end within attempt_max; outcomes leave the window within
        # window + bucket.
        polled = 0.0 if c.observe_breaker else c.tick  # a polled transition is seen late
        bound = c.attempt_max + c.window + c.bucket + polled
        opened = [t for t, _, new in transitions if new == "open" and t >= outage]
        if not opened:
            self._never(recovery - outage, bound, "opened in the outage")
            return
        r.opened_after = opened[0] - outage
        v.check(
            r.opened_after <= bound,
            "breaker",
            f"opened {r.opened_after:.3f}s into the outage (bound {bound:.3f}s)",
        )
        closed_in_outage = [
            t for t, _, new in transitions if new == "closed" and outage < t < recovery
        ]
        v.check(not closed_in_outage, "breaker", f"closed in the outage at {closed_in_outage[:3]}")
        # After the recovery: trials admitted in the outage end within
        # attempt_max (and re-open it), it stays open at most
        # open_duration_max, then trials run (attempt_max) and close it; calls
        # arrive every fraction of a millisecond, hence the 10 ms of slack.
        bound = 2 * c.attempt_max + c.open_duration_max + 0.01 + polled
        closed = [t for t, _, new in transitions if new == "closed" and t >= recovery]
        if not closed:
            self._never(starts[HEALTHY] + r.virtual - recovery, bound, "closed in the recovery")
            return
        r.closed_after = closed[0] - recovery
        v.check(
            r.closed_after <= bound,
            "breaker",
            f"closed {r.closed_after:.3f}s into the recovery (bound {bound:.3f}s)",
        )
        after = [tr for tr in transitions if tr[0] > closed[0]]
        v.check(not after, "breaker", f"transitions after closing in recovery: {after[:3]}")

    def _never(self, lasted: float, bound: float, what: str) -> None:
        """The breaker never did ``what`` in a phase that ``lasted`` seconds: was it long enough?"""
        if lasted <= bound:
            self.violations.add(
                "scenario",
                f"the breaker never {what}, but the phase lasted only {lasted:.3f}s "
                f"(it may take {bound:.3f}s): run more calls",
            )
        else:
            self.violations.add("breaker", f"never {what} ({lasted:.3f}s)")

    def check_memory(self) -> None:
        """Traced memory in the last tenth of the calls vs the first (medians of the samples)."""
        c = self.config
        if not c.trace_memory:
            return
        r = self.report
        tenth = c.calls // 10
        first = [b for issued, b in self.samples if issued < 2 * c.concurrency + tenth]
        last = [b for issued, b in self.samples if issued >= c.calls - tenth]
        if len(first) < c.memory_samples or len(last) < c.memory_samples:
            self.violations.add("memory", f"too few samples ({len(first)}, {len(last)})")
            return
        r.memory_first = round(statistics.median(first))
        r.memory_last = round(statistics.median(last))
        allowed = c.memory_slack + c.memory_per_call * c.calls
        grew = r.memory_last - r.memory_first
        self.violations.check(
            grew <= allowed,
            "memory",
            f"traced memory grew {grew / 1024:.0f} KiB from the first tenth to the last "
            f"(allowed {allowed / 1024:.0f} KiB)",
        )


def run_soak(config: Config | None = None, backend: str = "asyncio") -> Report:
    """Run one soak on ``backend`` in virtual time; the report lists what broke, if anything."""
    config = config or Config()
    collected = 0

    def count_collected(phase: str, info: dict[str, int]) -> None:
        nonlocal collected
        if phase == "stop":
            collected += info["collected"]

    gc.collect()
    if config.trace_memory:
        tracemalloc.start()
    gc.callbacks.append(count_collected)
    try:
        soak = Soak(config, backend)  # after tracemalloc starts: its allocations count too
        started = time.perf_counter()
        anyio.run(soak.main, backend=backend, backend_options=virtual_backend_options(backend))
        soak.report.wall = time.perf_counter() - started
        if config.trace_memory:
            soak.report.memory_peak = tracemalloc.get_traced_memory()[1]
        gc.collect()  # what the run left in cycles counts too
    finally:
        gc.callbacks.remove(count_collected)
        if config.trace_memory:
            tracemalloc.stop()
    per_call = collected / config.calls
    soak.violations.check(
        per_call <= config.max_cycle_garbage,
        "memory",
        f"{per_call:.2f} objects per call left in reference cycles "
        f"(at most {config.max_cycle_garbage})",
    )
    soak.report.gc_collected = collected
    report = soak.report
    report.violations = soak.violations.messages
    report.violation_counts = dict(soak.violations.counts)
    soak.prometheus.unregister()
    return report


def format_reports(reports: Sequence[Report]) -> str:
    """One table: a row per figure, a column per run."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Callable[[Report], Any]) -> None:
        rows.append((label, [str(fn(r)) for r in reports]))

    row("backend", lambda r: r.backend)
    row("breaker", lambda r: "observed" if r.config.observe_breaker else "quiet (polled)")
    row("calls", lambda r: f"{r.config.calls:,}")
    row("wall time (s)", lambda r: f"{r.wall:.1f}")
    row("calls/s (wall)", lambda r: f"{r.calls_per_second:,.0f}")
    row("virtual time (s)", lambda r: f"{r.virtual:.1f}")
    for name in OUTCOMES:
        row(f"  {name}", _count(lambda r: r.outcomes, name))
    for kind in ("open", "bulkhead", "timeout", "failed"):
        row(f"  fallback for {kind}", _count(lambda r: r.fallback_for, kind))
    for reason in ("open", "half_open_full", "queue_full", "max_wait"):
        row(f"  rejected: {reason}", _count(lambda r: r.rejections, reason))
    row("attempts", lambda r: f"{r.attempts:,}")
    row("retries", lambda r: f"{r.retries:,}")
    row(
        "cancels targeted/sent",
        lambda r: f"{r.cancels_targeted:,}+{r.trial_cancels_targeted:,}/{r.cancels_fired:,}",
    )
    for where in ("backoff", "queue", "permit", "fallback"):
        row(f"  landed in {where}", _count(lambda r: r.cancelled_in, where))
    keys = sorted({k for r in reports for k in r.transitions})
    for key in keys:
        row(f"  {key}", _count(lambda r: r.transitions, key))
    row("opened into outage (s)", lambda r: _seconds(r.opened_after))
    row("closed into recovery (s)", lambda r: _seconds(r.closed_after))
    row("bulkhead active peak", lambda r: f"{r.bulkhead_peak}/{r.config.max_concurrent}")
    row("  counted inside", lambda r: f"{r.bulkhead_inside_peak}/{r.config.max_concurrent}")
    row("half-open trials peak", lambda r: f"{r.trials_peak}/{r.config.half_open_max_calls}")
    row("  admitted/given back", lambda r: f"{r.trials_admitted:,}/{r.trials_given_back:,}")
    row(
        "memory first/last tenth",
        lambda r: _memory(r, f"{_mib(r.memory_first)}/{_mib(r.memory_last)} MiB"),
    )
    row("peak memory (MiB)", lambda r: _memory(r, _mib(r.memory_peak)))
    row("cycle garbage (objects/call)", lambda r: f"{r.gc_collected / r.config.calls:.3f}")
    row("violations", lambda r: sum(r.violation_counts.values()))
    width = max(len(label) for label, _ in rows)
    cols = [max(len(cells[i]) for _, cells in rows) for i in range(len(reports))]
    lines = []
    for label, cells in rows:
        lines.append(
            f"{label:<{width}}  " + "  ".join(f"{x:>{w}}" for x, w in zip(cells, cols, strict=True))
        )
    return "\n".join(lines)


def _count(pick: Callable[[Report], dict[str, int]], key: str) -> Callable[[Report], str]:
    return lambda r: f"{pick(r).get(key, 0):,}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _memory(report: Report, figure: str) -> str:
    return figure if report.config.trace_memory else "not traced"


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the soak on the chosen backends, print the table; 1 on any violation."""
    parser = argparse.ArgumentParser(prog="soak", description=(__doc__ or "").split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="calls in all")
    size.add_argument("--quick", action="store_true", help=f"{QUICK_CALLS:,} calls (the CI size)")
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-trace-memory", action="store_true", help="skip tracemalloc and the memory check"
    )
    parser.add_argument(
        "--quiet-breaker",
        action="store_true",
        help="no observer on the breaker (its fast paths run; its transitions are polled)",
    )
    args = parser.parse_args(argv)
    calls = QUICK_CALLS if args.quick else args.calls
    if calls < 20_000:
        parser.error(f"--calls must be at least 20000, got {calls}")
    config = Config(
        calls=calls,
        seed=args.seed,
        trace_memory=not args.no_trace_memory,
        observe_breaker=not args.quiet_breaker,
    )
    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)
    reports = [run_soak(config, backend) for backend in backends]
    print(format_reports(reports))
    failed = False
    for report in reports:
        for message in report.violations:
            failed = True
            print(f"[{report.backend}] {message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
