"""Who is measured: resilient, the hand-rolled floors, and each peer that has the feature.

Every contender is a :class:`Contender`: a feature, a library, and ``wrap``,
which takes the coroutine function to protect and returns the zero-argument
call to time, built the way the library's own documentation shows (its
decorator where it has one). ``wrap`` runs inside the event loop (some peers
need one at decoration time).

The settings are the same for everyone wherever the libraries allow it:

- retry: 3 attempts in total, zero wait between them, any ``Exception``;
- breaker: opens after 5 failures (``TRIP``), stays open an hour (``LONG``:
  the benchmark never sees half-open); windows as each library has them;
- bulkhead: 100 concurrent calls, room for 10,000 waiters, no wait limit
  (or 60 s where a peer needs one);
- timeout: 30 s (never reached: the success path);
- fallback: a constant answer.

A peer that is not installed is skipped, and the report names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio

from resilient import (
    Backoff,
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    Fallback,
    Pipeline,
    Retry,
    Timeout,
    TimeWindow,
)

Call = Callable[[], Awaitable[Any]]
Fn = Callable[..., Awaitable[Any]]

TRIP = 5  # failures that open every breaker
LONG = 3600.0  # seconds open: never half-open during a benchmark
LIMIT = 100  # bulkhead permits
WAITERS = 10_000  # bulkhead queue room (case 4 starts 10,000 tasks)
TIMEOUT = 30.0  # seconds, never reached
ATTEMPTS = 3


class Boom(Exception):
    """The failure every failing call raises."""


@dataclass
class Contender:
    """One way to protect a call. ``kind``: "ours", "floor", "reference" or "peer"."""

    feature: str
    library: str
    label: str
    wrap: Callable[[Fn], Call]
    kind: str = "peer"
    note: str = ""
    open_error: type[BaseException] | None = None  # breakers: what an open breaker raises

    @property
    def name(self) -> str:
        return f"{self.feature} | {self.label}"


PEERS = (
    "tenacity",
    "stamina",
    "backoff",
    "aiobreaker",
    "purgatory",
    "circuitbreaker",
    "pybreaker",
    "hyx",
    "pyresilience",
    "aioresilience",
)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def missing_peers() -> list[str]:
    gone = [p for p in PEERS if not installed(p)]
    if installed("pybreaker") and not installed("tornado"):
        gone.append("pybreaker (its async path needs tornado)")
    return gone


# -- resilient ------------------------------------------------------------------------


def ours_retry() -> Retry:
    return Retry("bench-retry", attempts=ATTEMPTS, backoff=Backoff.constant(0))


def ours_breaker(window: str = "count") -> CircuitBreaker:
    """``count``: the default CountWindow(100); ``time``: TimeWindow(60) with slow-call timing."""
    if window == "time":
        return CircuitBreaker(
            "bench-breaker",
            window=TimeWindow(60.0),
            slow_call_duration=5.0,
            minimum_calls=TRIP,
            open_duration=LONG,
        )
    return CircuitBreaker(
        "bench-breaker", window=CountWindow(100), minimum_calls=TRIP, open_duration=LONG
    )


def ours_breaker_recording(fn: Fn) -> Call:
    """The default breaker recording every success into its window.

    A success written over a slot that holds a success changes nothing, so
    the fast path takes most successes unrecorded; this row pokes that off,
    to show what a recorded success costs (as for the first success after a
    failure, or one written over a failure).
    """
    breaker = ours_breaker("count")
    breaker._state.skippable = False  # a private attribute, poked here only
    return breaker(fn)


def ours_bulkhead() -> Bulkhead:
    return Bulkhead("bench-bulkhead", LIMIT)


def ours_timeout() -> Timeout:
    return Timeout(TIMEOUT, name="bench-timeout")


def ours_fallback() -> Fallback:
    return Fallback(lambda exc: 0, name="bench-fallback")


def ours_stack(fallback: bool = False) -> Pipeline:
    """The documented order: (Fallback →) Retry → CircuitBreaker → Bulkhead → Timeout."""
    inner = (ours_retry(), ours_breaker("time"), ours_bulkhead(), ours_timeout())
    if fallback:
        return Pipeline(ours_fallback(), *inner, name="bench-stack")
    return Pipeline(*inner, name="bench-stack")


def ours_breaker_bulkhead(window: str = "count") -> Pipeline:
    return Pipeline(ours_breaker(window), ours_bulkhead(), name="bench-bb")


# -- the hand-rolled floors ------------------------------------------------------------------


class HandRolledOpen(Exception):
    """The hand-rolled breaker's rejection."""


def floor_retry(fn: Fn, attempts: int = ATTEMPTS) -> Fn:
    """A bare try/except loop; a zero wait is one ``asyncio.sleep(0)``, as everyone's."""

    async def retried(*args: Any, **kwargs: Any) -> Any:
        attempt = 1
        while True:
            try:
                return await fn(*args, **kwargs)
            except Exception:
                if attempt >= attempts:
                    raise
            attempt += 1
            await asyncio.sleep(0)

    return retried


_REFERENCE_CONTEXT: ContextVar[object] = ContextVar("bench_reference_context", default=None)


def floor_retry_with_context(fn: Fn, attempts: int = ATTEMPTS) -> Fn:
    """The try/except loop plus what a Retry must do on every call, written by hand.

    The call context in a ``ContextVar`` (set before the call, reset after:
    ``current_context().attempt`` is public) and one clock reading (the
    deadline and the give-up note count from the first attempt's start).
    """
    var = _REFERENCE_CONTEXT
    clock = time.monotonic

    async def retried(*args: Any, **kwargs: Any) -> Any:
        token = var.set(1)
        try:
            start = clock()
            attempt = 1
            while True:
                try:
                    return await fn(*args, **kwargs)
                except Exception:
                    if attempt >= attempts or clock() - start > LONG:
                        raise
                attempt += 1
                await asyncio.sleep(0)
        finally:
            var.reset(token)

    return retried


class Counter:
    """A consecutive-failure counter: open after ``TRIP`` failures in a row, for ``LONG`` s."""

    def __init__(self, threshold: int = TRIP, duration: float = LONG) -> None:
        self.threshold = threshold
        self.duration = duration
        self.failures = 0
        self.until = 0.0

    def __call__(self, fn: Fn) -> Fn:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            # The clock is read only once the counter is at its threshold.
            if self.failures >= self.threshold and asyncio.get_running_loop().time() < self.until:
                raise HandRolledOpen
            try:
                result = await fn(*args, **kwargs)
            except Exception:
                self.failures += 1
                if self.failures >= self.threshold:
                    self.until = asyncio.get_running_loop().time() + self.duration
                raise
            self.failures = 0
            return result

        return counted


def floor_semaphore(fn: Fn, sem: Any = None) -> Fn:
    """``async with asyncio.Semaphore(100)`` (or the semaphore given)."""
    sem = sem if sem is not None else asyncio.Semaphore(LIMIT)

    async def limited(*args: Any, **kwargs: Any) -> Any:
        async with sem:
            return await fn(*args, **kwargs)

    return limited


def floor_timeout(fn: Fn, seconds: float = TIMEOUT) -> Fn:
    """``async with asyncio.timeout(seconds)``."""

    async def timed(*args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(seconds):
            return await fn(*args, **kwargs)

    return timed


def anyio_timeout(fn: Fn, seconds: float = TIMEOUT) -> Fn:
    """``with anyio.fail_after(seconds)``: the floor of anyio code (and of trio's)."""

    async def timed(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(seconds):
            return await fn(*args, **kwargs)

    return timed


def floor_fallback(fn: Fn) -> Fn:
    """``try: ... except Exception: return default``."""

    async def answered(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except Exception:
            return 0

    return answered


def floor_stack(fn: Fn) -> Fn:
    """The four floors stacked in the documented order: retry(counter(semaphore(timeout)))."""
    return floor_retry(Counter()(floor_semaphore(floor_timeout(fn))))


# -- peers ----------------------------------------------------------------------------


def _plain(fn: Fn) -> Call:
    return fn


def tenacity_retry(fn: Fn) -> Call:
    import tenacity

    return tenacity.retry(stop=tenacity.stop_after_attempt(ATTEMPTS), wait=tenacity.wait_none())(fn)


def stamina_retry(fn: Fn) -> Call:
    import stamina
    import stamina.instrumentation

    # No logging or Prometheus hooks, like every other contender here
    # (stamina turns them on when structlog or prometheus-client is installed).
    stamina.instrumentation.set_on_retry_hooks([])
    return stamina.retry(
        on=Exception, attempts=ATTEMPTS, wait_initial=0, wait_max=0, wait_jitter=0
    )(fn)


def backoff_retry(fn: Fn) -> Call:
    import backoff

    return backoff.on_exception(  # type: ignore[no-any-return]
        backoff.constant, Exception, max_tries=ATTEMPTS, interval=0, jitter=None
    )(fn)


def hyx_retry(fn: Fn) -> Call:
    from hyx.retry import retry

    # hyx counts retries after the first call: 2 retries = 3 attempts.
    return retry(on=Exception, attempts=ATTEMPTS - 1, backoff=0)(fn)


def pyresilience_retry(fn: Fn) -> Call:
    from pyresilience import RetryConfig, resilient

    return resilient(retry=RetryConfig(max_attempts=ATTEMPTS, delay=0, jitter=False))(fn)


def aioresilience_retry(fn: Fn) -> Call:
    from aioresilience import RetryConfig, RetryPolicy, with_retry

    policy = RetryPolicy(config=RetryConfig(max_attempts=ATTEMPTS, initial_delay=0, jitter=0))
    return with_retry(policy)(fn)  # type: ignore[no-any-return]


def aiobreaker_breaker(fn: Fn) -> Call:
    import aiobreaker

    breaker = aiobreaker.CircuitBreaker(fail_max=TRIP, timeout_duration=timedelta(seconds=LONG))
    return breaker(fn)  # type: ignore[no-any-return]


_purgatory_names = iter(range(10**9))


def purgatory_breaker(fn: Fn) -> Call:
    import purgatory

    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=TRIP, default_ttl=LONG)
    return factory(f"bench-{next(_purgatory_names)}")(fn)  # type: ignore[no-any-return]


def circuitbreaker_breaker(fn: Fn) -> Call:
    import circuitbreaker

    return circuitbreaker.circuit(  # type: ignore[no-any-return]
        failure_threshold=TRIP, recovery_timeout=LONG, expected_exception=Exception
    )(fn)


def pybreaker_breaker(fn: Fn) -> Call:
    import pybreaker

    breaker = pybreaker.CircuitBreaker(fail_max=TRIP, reset_timeout=LONG)
    return functools.partial(breaker.call_async, fn)


def hyx_breaker(fn: Fn) -> Call:
    from hyx.circuitbreaker import consecutive_breaker

    return consecutive_breaker(  # type: ignore[no-any-return]
        exceptions=Exception, failure_threshold=TRIP, recovery_time_secs=LONG
    )(fn)


def pyresilience_breaker(fn: Fn) -> Call:
    from pyresilience import CircuitBreakerConfig, resilient

    return resilient(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=TRIP, recovery_timeout=LONG)
    )(fn)


def pyresilience_window_breaker(fn: Fn) -> Call:
    from pyresilience import CircuitBreakerConfig, resilient

    config = CircuitBreakerConfig(
        sliding_window_size=100,
        failure_rate_threshold=0.5,
        minimum_calls=TRIP,
        slow_call_duration=5.0,
        recovery_timeout=LONG,
    )
    return resilient(circuit_breaker=config)(fn)


def aioresilience_breaker(fn: Fn) -> Call:
    from aioresilience import CircuitBreaker as AioCircuitBreaker
    from aioresilience import CircuitConfig, with_circuit_breaker

    breaker = AioCircuitBreaker(
        name="bench", config=CircuitConfig(failure_threshold=TRIP, recovery_timeout=LONG)
    )
    return with_circuit_breaker(breaker)(fn)  # type: ignore[no-any-return]


def hyx_bulkhead(fn: Fn) -> Call:
    from hyx.bulkhead import bulkhead

    # max_capacity counts running and queued calls.
    return bulkhead(max_concurrency=LIMIT, max_capacity=LIMIT + WAITERS)(fn)  # type: ignore[no-any-return]


def pyresilience_bulkhead(fn: Fn) -> Call:
    from pyresilience import BulkheadConfig, resilient

    # max_wait=0 would reject at once when full; a long wait lets everyone queue.
    return resilient(bulkhead=BulkheadConfig(max_concurrent=LIMIT, max_wait=60.0))(fn)


def aioresilience_bulkhead(fn: Fn) -> Call:
    from aioresilience import Bulkhead as AioBulkhead
    from aioresilience import BulkheadConfig, with_bulkhead

    bulkhead = AioBulkhead(
        name="bench", config=BulkheadConfig(max_concurrent=LIMIT, max_waiting=WAITERS)
    )
    return with_bulkhead(bulkhead)(fn)  # type: ignore[no-any-return]


def hyx_timeout(fn: Fn) -> Call:
    from hyx.timeout import timeout

    return timeout(TIMEOUT)(fn)


def pyresilience_timeout(fn: Fn) -> Call:
    from pyresilience import TimeoutConfig, resilient

    return resilient(timeout=TimeoutConfig(seconds=TIMEOUT))(fn)


def aioresilience_timeout(fn: Fn) -> Call:
    from aioresilience import TimeoutConfig, TimeoutManager, with_timeout_manager

    return with_timeout_manager(TimeoutManager(config=TimeoutConfig(timeout=TIMEOUT)))(fn)  # type: ignore[no-any-return]


def hyx_fallback(fn: Fn) -> Call:
    from hyx.fallback import fallback

    async def handler(exc: Any, *args: Any, **kwargs: Any) -> int:
        return 0

    return fallback(handler, on=Exception)(fn)


def pyresilience_fallback(fn: Fn) -> Call:
    from pyresilience import FallbackConfig, resilient

    return resilient(fallback=FallbackConfig(handler=lambda exc: 0))(fn)


def aioresilience_fallback(fn: Fn) -> Call:
    from aioresilience import FallbackConfig, FallbackHandler, with_fallback_handler

    return with_fallback_handler(FallbackHandler(config=FallbackConfig(fallback=0)))(fn)  # type: ignore[no-any-return]


def hyx_stack(fn: Fn) -> Call:
    from hyx.bulkhead import bulkhead
    from hyx.circuitbreaker import consecutive_breaker
    from hyx.retry import retry
    from hyx.timeout import timeout

    @retry(on=Exception, attempts=ATTEMPTS - 1, backoff=0)
    @consecutive_breaker(exceptions=Exception, failure_threshold=TRIP, recovery_time_secs=LONG)
    @bulkhead(max_concurrency=LIMIT, max_capacity=LIMIT + WAITERS)
    @timeout(TIMEOUT)
    async def stacked(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return stacked  # type: ignore[no-any-return]


def pyresilience_stack(fn: Fn) -> Call:
    from pyresilience import (
        BulkheadConfig,
        CircuitBreakerConfig,
        RetryConfig,
        TimeoutConfig,
        resilient,
    )

    return resilient(
        retry=RetryConfig(max_attempts=ATTEMPTS, delay=0, jitter=False),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=TRIP, recovery_timeout=LONG),
        bulkhead=BulkheadConfig(max_concurrent=LIMIT, max_wait=60.0),
        timeout=TimeoutConfig(seconds=TIMEOUT),
    )(fn)


def aioresilience_stack(fn: Fn) -> Call:
    return aioresilience_retry(
        aioresilience_breaker(aioresilience_bulkhead(aioresilience_timeout(fn)))
    )


def hyx_breaker_bulkhead(fn: Fn) -> Call:
    return hyx_breaker(hyx_bulkhead(fn))


def pyresilience_breaker_bulkhead(fn: Fn) -> Call:
    from pyresilience import BulkheadConfig, CircuitBreakerConfig, resilient

    return resilient(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=TRIP, recovery_timeout=LONG),
        bulkhead=BulkheadConfig(max_concurrent=LIMIT, max_wait=60.0),
    )(fn)


def aioresilience_breaker_bulkhead(fn: Fn) -> Call:
    return aioresilience_breaker(aioresilience_bulkhead(fn))


# -- the tables ---------------------------------------------------------------------------


def _keep(contenders: list[Contender]) -> list[Contender]:
    """Drop the contenders whose library is not installed."""
    out = []
    for c in contenders:
        if c.kind == "peer":
            if not installed(c.library):
                continue
            if c.library == "pybreaker" and not installed("tornado"):
                continue
        out.append(c)
    return out


def _open_errors() -> dict[str, type[BaseException]]:
    errors: dict[str, type[BaseException]] = {}
    with contextlib.suppress(ImportError):
        import aiobreaker

        errors["aiobreaker"] = aiobreaker.CircuitBreakerError
    with contextlib.suppress(ImportError):
        from purgatory.domain.model import OpenedState

        errors["purgatory"] = OpenedState
    with contextlib.suppress(ImportError):
        import circuitbreaker

        errors["circuitbreaker"] = circuitbreaker.CircuitBreakerError
    with contextlib.suppress(ImportError):
        import pybreaker

        errors["pybreaker"] = pybreaker.CircuitBreakerError
    with contextlib.suppress(ImportError):
        from hyx.circuitbreaker.exceptions import BreakerFailing

        errors["hyx"] = BreakerFailing
    with contextlib.suppress(ImportError):
        import pyresilience

        errors["pyresilience"] = pyresilience.CircuitOpenError
    with contextlib.suppress(ImportError):
        from aioresilience import CircuitBreakerOpenError

        errors["aioresilience"] = CircuitBreakerOpenError
    return errors


def retry_contenders() -> list[Contender]:
    f = "retry"
    return _keep(
        [
            Contender(f, "resilient", "resilient @Retry", lambda fn: ours_retry()(fn), "ours"),
            Contender(f, "floor", "try/except loop", floor_retry, "floor"),
            Contender(
                f,
                "floor",
                "try/except loop + context + clock",
                floor_retry_with_context,
                "reference",
                note="the loop with a ContextVar set and reset, and a clock reading",
            ),
            Contender(f, "tenacity", "tenacity @retry", tenacity_retry),
            Contender(f, "stamina", "stamina @retry", stamina_retry, note="hooks off"),
            Contender(f, "backoff", "backoff @on_exception", backoff_retry),
            Contender(f, "hyx", "hyx @retry", hyx_retry),
            Contender(f, "pyresilience", "pyresilience retry", pyresilience_retry),
            Contender(f, "aioresilience", "aioresilience @with_retry", aioresilience_retry),
        ]
    )


def breaker_contenders() -> list[Contender]:
    f = "breaker"
    errors = _open_errors()
    ours = [
        Contender(
            f,
            "resilient",
            "resilient CountWindow(100)",
            lambda fn: ours_breaker("count")(fn),
            "ours",
            note="default window",
            open_error=CircuitOpenError,
        ),
        Contender(
            f,
            "resilient",
            "resilient CountWindow(100), recording",
            ours_breaker_recording,
            "ours",
            note="every success recorded (skipping off)",
        ),
        Contender(
            f,
            "resilient",
            "resilient TimeWindow+slow",
            lambda fn: ours_breaker("time")(fn),
            "ours",
            note="TimeWindow(60), slow-call timing",
            open_error=CircuitOpenError,
        ),
        Contender(
            f,
            "floor",
            "consecutive-failure counter",
            lambda fn: Counter()(fn),
            "floor",
            open_error=HandRolledOpen,
        ),
    ]
    peers = [
        ("aiobreaker", "aiobreaker", aiobreaker_breaker, "consecutive"),
        ("purgatory", "purgatory", purgatory_breaker, "consecutive"),
        ("circuitbreaker", "circuitbreaker @circuit", circuitbreaker_breaker, "consecutive"),
        ("pybreaker", "pybreaker call_async", pybreaker_breaker, "consecutive, tornado"),
        ("hyx", "hyx @consecutive_breaker", hyx_breaker, "consecutive"),
        ("pyresilience", "pyresilience breaker", pyresilience_breaker, "consecutive"),
        (
            "pyresilience",
            "pyresilience window+slow",
            pyresilience_window_breaker,
            "sliding window(100), slow-call timing",
        ),
        ("aioresilience", "aioresilience breaker", aioresilience_breaker, "consecutive"),
    ]
    return _keep(
        ours
        + [
            Contender(f, lib, label, wrap, note=note, open_error=errors.get(lib))
            for lib, label, wrap, note in peers
        ]
    )


def bulkhead_contenders() -> list[Contender]:
    f = "bulkhead"
    return _keep(
        [
            Contender(
                f, "resilient", "resilient @Bulkhead", lambda fn: ours_bulkhead()(fn), "ours"
            ),
            Contender(f, "floor", "asyncio.Semaphore", floor_semaphore, "floor"),
            Contender(f, "hyx", "hyx @bulkhead", hyx_bulkhead),
            Contender(f, "pyresilience", "pyresilience bulkhead", pyresilience_bulkhead),
            Contender(f, "aioresilience", "aioresilience @with_bulkhead", aioresilience_bulkhead),
        ]
    )


def timeout_contenders() -> list[Contender]:
    f = "timeout"
    return _keep(
        [
            Contender(f, "resilient", "resilient @Timeout", lambda fn: ours_timeout()(fn), "ours"),
            Contender(f, "floor", "asyncio.timeout", floor_timeout, "floor"),
            Contender(f, "anyio", "anyio.fail_after", anyio_timeout, "reference"),
            Contender(f, "hyx", "hyx @timeout", hyx_timeout, note="a task per call"),
            Contender(f, "pyresilience", "pyresilience timeout", pyresilience_timeout),
            Contender(
                f, "aioresilience", "aioresilience @with_timeout_manager", aioresilience_timeout
            ),
        ]
    )


def fallback_contenders() -> list[Contender]:
    f = "fallback"
    return _keep(
        [
            Contender(
                f, "resilient", "resilient @Fallback", lambda fn: ours_fallback()(fn), "ours"
            ),
            Contender(f, "floor", "try/except", floor_fallback, "floor"),
            Contender(f, "hyx", "hyx @fallback", hyx_fallback),
            Contender(f, "pyresilience", "pyresilience fallback", pyresilience_fallback),
            Contender(
                f, "aioresilience", "aioresilience @with_fallback_handler", aioresilience_fallback
            ),
        ]
    )


def stack_contenders() -> list[Contender]:
    f = "stack"
    return _keep(
        [
            Contender(
                f,
                "resilient",
                "resilient Pipeline",
                lambda fn: ours_stack()(fn),
                "ours",
                note="retry, breaker (TimeWindow+slow), bulkhead, timeout",
            ),
            Contender(
                f,
                "resilient",
                "resilient Pipeline + Fallback",
                lambda fn: ours_stack(fallback=True)(fn),
                "ours",
                note="the same with a Fallback outermost",
            ),
            Contender(f, "floor", "the four floors stacked", floor_stack, "floor"),
            Contender(f, "hyx", "hyx, 4 decorators", hyx_stack),
            Contender(f, "pyresilience", "pyresilience, 4 configs", pyresilience_stack),
            Contender(f, "aioresilience", "aioresilience, 4 decorators", aioresilience_stack),
        ]
    )


def success_path_contenders() -> list[Contender]:
    """Case 1: every feature."""
    return (
        retry_contenders()
        + breaker_contenders()
        + bulkhead_contenders()
        + timeout_contenders()
        + fallback_contenders()
        + stack_contenders()
    )


def breaker_bulkhead_contenders() -> list[Contender]:
    """Case 4: breaker + bulkhead(100) around each call (and the bare run, no policy)."""
    f = "breaker+bulkhead"

    def floor(fn: Fn) -> Call:
        return Counter()(floor_semaphore(fn))

    return _keep(
        [
            Contender(f, "none", "bare run (no policy)", _plain, "floor"),
            Contender(f, "floor", "counter + asyncio.Semaphore", floor, "floor"),
            Contender(
                f,
                "resilient",
                "resilient Pipeline",
                lambda fn: ours_breaker_bulkhead("count")(fn),
                "ours",
                note="CountWindow(100) breaker",
            ),
            Contender(
                f,
                "resilient",
                "resilient Pipeline, TimeWindow+slow",
                lambda fn: ours_breaker_bulkhead("time")(fn),
                "ours",
            ),
            Contender(f, "hyx", "hyx", hyx_breaker_bulkhead),
            Contender(f, "pyresilience", "pyresilience", pyresilience_breaker_bulkhead),
            Contender(f, "aioresilience", "aioresilience", aioresilience_breaker_bulkhead),
        ]
    )


__all__ = [
    "ATTEMPTS",
    "LIMIT",
    "LONG",
    "TIMEOUT",
    "TRIP",
    "WAITERS",
    "Boom",
    "BulkheadFullError",
    "Call",
    "Contender",
    "Counter",
    "Fn",
    "HandRolledOpen",
    "anyio_timeout",
    "breaker_bulkhead_contenders",
    "breaker_contenders",
    "floor_fallback",
    "floor_retry",
    "floor_semaphore",
    "floor_stack",
    "floor_timeout",
    "missing_peers",
    "ours_breaker",
    "ours_bulkhead",
    "ours_fallback",
    "ours_retry",
    "ours_stack",
    "ours_timeout",
    "retry_contenders",
    "success_path_contenders",
]
