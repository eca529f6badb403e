"""Retry with backoff, jitter, a deadline and server retry hints.

``Retry(name, attempts=3, backoff=Backoff.exponential(), ...)`` calls the
wrapped function up to ``attempts`` times in total. Between attempts it sleeps
on the loop clock for the backoff delay, or for the error's retry hint when it
carries one. It never sleeps after the last attempt, never starts an attempt
past its ``deadline``, and a cancellation (of the call or of a backoff sleep)
propagates at once.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, Literal, ParamSpec, TypeVar, final

import anyio

from ._anyio import deliver_pending_cancel
from ._events import Observer, RetryGaveUp, RetryScheduled
from ._policy import (
    Policy,
    SharedContext,
    get_context,
    label_of,
    reset_context,
    set_context,
    writable,
)
from ._time import asyncio_loop, now
from ._validate import ExceptionFilter, check_exception_types, check_int, check_seconds
from .errors import BulkheadFullError, CircuitOpenError

__all__ = ["Backoff", "Jitter", "Retry"]

P = ParamSpec("P")
T = TypeVar("T")

Jitter = Literal["none", "full", "equal", "decorrelated"]
_JITTERS = ("none", "full", "equal", "decorrelated")
# Rejections by our own breaker and bulkhead are retried only when asked for by name.
_NOT_RETRIED_BY_DEFAULT = (CircuitOpenError, BulkheadFullError)


@final
class Backoff:
    """How long to wait before retry k (k = 1 for the first retry).

    The base delay is capped at ``maximum`` before jitter, so jitter spreads
    below the cap; computing it saturates instead of overflowing. Build one
    with :meth:`constant`, :meth:`linear` or :meth:`exponential`.
    """

    __slots__ = ("_kind", "initial", "jitter", "maximum", "multiplier", "step")

    def __init__(
        self,
        kind: Literal["constant", "linear", "exponential"],
        initial: float,
        maximum: float,
        step: float,
        multiplier: float,
        jitter: Jitter,
    ) -> None:
        self._kind = kind
        self.initial = initial
        self.maximum = maximum
        self.step = step
        self.multiplier = multiplier
        self.jitter: Jitter = jitter

    @classmethod
    def constant(cls, delay: float, *, jitter: Jitter = "none") -> Backoff:
        """Always ``delay`` seconds (before jitter)."""
        d = check_seconds("Backoff.constant", "delay", delay, allow_zero=True)
        return cls("constant", d, d, 0.0, 1.0, _check_jitter("Backoff.constant", jitter))

    @classmethod
    def linear(
        cls,
        initial: float,
        *,
        step: float | None = None,
        maximum: float = math.inf,
        jitter: Jitter = "none",
    ) -> Backoff:
        """``min(initial + step * (k - 1), maximum)``; ``step`` defaults to ``initial``."""
        owner = "Backoff.linear"
        i = check_seconds(owner, "initial", initial, allow_zero=True)
        s = i if step is None else check_seconds(owner, "step", step, allow_zero=True)
        m = check_seconds(owner, "maximum", maximum, allow_zero=True, allow_inf=True)
        if i > m:
            raise ValueError(f"{owner}: initial must be <= maximum, got {initial!r} > {maximum!r}")
        return cls("linear", i, m, s, 1.0, _check_jitter(owner, jitter))

    @classmethod
    def exponential(
        cls,
        initial: float = 1.0,
        *,
        maximum: float = 30.0,
        multiplier: float = 2.0,
        jitter: Jitter = "full",
    ) -> Backoff:
        """``min(initial * multiplier ** (k - 1), maximum)``; ``maximum`` must be finite."""
        owner = "Backoff.exponential"
        i = check_seconds(owner, "initial", initial, allow_zero=True)
        m = check_seconds(owner, "maximum", maximum, allow_zero=True)
        if i > m:
            raise ValueError(f"{owner}: initial must be <= maximum, got {initial!r} > {maximum!r}")
        if (
            not isinstance(multiplier, int | float)
            or isinstance(multiplier, bool)
            or not math.isfinite(multiplier)
            or multiplier < 1
        ):
            raise ValueError(
                f"{owner}: multiplier must be a finite number >= 1, got {multiplier!r}"
            )
        return cls("exponential", i, m, 0.0, float(multiplier), _check_jitter(owner, jitter))

    def base(self, k: int) -> float:
        """The delay before retry ``k`` before jitter, capped at ``maximum``."""
        if self._kind == "constant":
            return self.initial
        if self._kind == "linear":
            return min(self.initial + self.step * (k - 1), self.maximum)
        if self.initial == 0.0 or self.multiplier == 1.0:
            return min(self.initial, self.maximum)
        # Work in log space so a huge k (or a tiny initial) saturates instead
        # of overflowing: log(d) = log(initial) + (k - 1) * log(multiplier).
        log_d = math.log(self.initial) + (k - 1) * math.log(self.multiplier)
        if log_d >= math.log(self.maximum):
            return self.maximum
        try:  # exact where it fits, so 1.0 * 2 ** 2 is 4.0, not 3.9999...
            return min(self.initial * self.multiplier ** (k - 1), self.maximum)
        except OverflowError:  # multiplier ** (k - 1) alone overflows; initial is tiny
            return min(math.exp(log_d), self.maximum)

    def delay(self, k: int, previous: float, rng: random.Random | None = None) -> float:
        """The jittered delay before retry ``k``; ``previous`` is the last delay slept."""
        uniform = (rng or random).uniform
        jitter = self.jitter
        if jitter == "decorrelated":
            low = self.initial
            high = 3.0 * max(previous, low)
            return min(self.maximum, uniform(low, high))
        d = self.base(k)
        if jitter == "none":
            return d
        if jitter == "full":
            return min(uniform(0.0, d), d)
        return min(d / 2.0 + uniform(0.0, d / 2.0), d)  # equal

    def __repr__(self) -> str:
        if self._kind == "constant":
            return f"Backoff.constant({self.initial!r}, jitter={self.jitter!r})"
        if self._kind == "linear":
            return (
                f"Backoff.linear({self.initial!r}, step={self.step!r}, "
                f"maximum={self.maximum!r}, jitter={self.jitter!r})"
            )
        return (
            f"Backoff.exponential({self.initial!r}, maximum={self.maximum!r}, "
            f"multiplier={self.multiplier!r}, jitter={self.jitter!r})"
        )


def _check_jitter(owner: str, jitter: object) -> Jitter:
    if jitter not in _JITTERS:
        raise ValueError(f"{owner}: jitter must be one of {_JITTERS}, got {jitter!r}")
    return jitter  # type: ignore[return-value]


_HINT_TYPES = (int, float, timedelta)  # a tuple: ``int | float | ...`` is rebuilt per call


def _default_retry_after(exc: BaseException) -> float | timedelta | None:
    """The error's ``retry_after`` attribute when it is seconds or a ``timedelta``."""
    value = getattr(exc, "retry_after", None)
    if value is None:  # most errors: no hint
        return None
    if isinstance(value, _HINT_TYPES) and not isinstance(value, bool):
        return value
    return None


def _hint_seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if math.isnan(seconds):
        return None
    return max(seconds, 0.0)


@final
class Retry(Policy):
    """Call again on failure, with backoff. See the module docstring.

    Arguments (keyword-only after ``name``), with their defaults:

    - ``attempts=3``: total calls, the first included (>= 1).
    - ``backoff=Backoff.exponential()``: delays between attempts.
    - ``retry_on=(Exception,)``: exception types, or a predicate on the
      exception. ``CircuitOpenError`` and ``BulkheadFullError`` are retried only
      when the tuple names that class itself, or the predicate says so.
    - ``retry_if_result=None``: a predicate on a returned value; true retries.
    - ``deadline=None``: seconds from the first attempt's start; a retry starts
      only if ``elapsed + delay <= deadline``.
    - ``retry_after=None``: extracts a hint (seconds or ``timedelta``) from the
      error; by default its ``retry_after`` attribute. A hint replaces the delay.
    - ``max_retry_after=None``: a hint above this gives up.
    """

    kind = "retry"

    def __init__(
        self,
        name: str,
        *,
        attempts: int = 3,
        backoff: Backoff | None = None,
        retry_on: ExceptionFilter | type[Exception] = (Exception,),
        retry_if_result: Callable[[Any], bool] | None = None,
        deadline: float | None = None,
        retry_after: Callable[[BaseException], float | timedelta | None] | None = None,
        max_retry_after: float | None = None,
        observers: Sequence[Observer] = (),
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name, observers)
        owner = f"Retry({name!r})"
        self.attempts = check_int(owner, "attempts", attempts, minimum=1)
        if backoff is None:
            backoff = Backoff.exponential()
        if not isinstance(backoff, Backoff):
            raise ValueError(f"{owner}: backoff must be a Backoff, got {backoff!r}")
        self.backoff = backoff
        self.retry_on = check_exception_types(owner, "retry_on", retry_on)
        if isinstance(self.retry_on, tuple):
            listed = set(self.retry_on)
            self._excluded = tuple(c for c in _NOT_RETRIED_BY_DEFAULT if c not in listed)
        else:
            self._excluded = ()
        if retry_if_result is not None and not callable(retry_if_result):
            raise ValueError(
                f"{owner}: retry_if_result must be a predicate, got {retry_if_result!r}"
            )
        self.retry_if_result = retry_if_result
        self.deadline = None if deadline is None else check_seconds(owner, "deadline", deadline)
        if retry_after is not None and not callable(retry_after):
            raise ValueError(f"{owner}: retry_after must be a callable, got {retry_after!r}")
        self._retry_after = retry_after or _default_retry_after
        self.max_retry_after = (
            None
            if max_retry_after is None
            else check_seconds(owner, "max_retry_after", max_retry_after, allow_zero=True)
        )
        self._rng = rng
        self._label = label_of(self)
        # The context of a call that found none open, until it needs its own.
        self._first = SharedContext((self._label,), 1)
        # A constant backoff without jitter needs no computing per retry.
        fixed = backoff._kind == "constant" and backoff.jitter == "none"
        self._fixed_delay = backoff.initial if fixed else None

    def _should_retry(self, exc: Exception) -> bool:
        retry_on = self.retry_on
        if isinstance(retry_on, tuple):
            return isinstance(exc, retry_on) and not isinstance(exc, self._excluded)
        return bool(retry_on(exc))

    # The loop is written out twice, in call() and in the decorator's wrapper:
    # a shared helper would cost a coroutine frame per call (a second one
    # when decorated). It does only what it must on the success path: enter
    # the call context, read the clock once (the deadline and the give-up
    # note count from the first attempt's start), and await the call. The
    # decision after an attempt that needs another is _decide's.

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        ctx = get_context()
        token = None
        if ctx is None:
            token = set_context(self._first)
        else:
            if type(ctx) is SharedContext:
                ctx = writable(ctx)
            if self._label not in ctx.policies:
                ctx.policies += (self._label,)
            ctx.attempt = 1
        try:
            start = now()
            attempt = 1
            previous = 0.0
            while True:
                try:
                    result: Any = await fn(*args, **kwargs)
                except Exception as exc:
                    if not self._should_retry(exc):
                        raise
                    error: Exception | None = exc
                else:
                    predicate = self.retry_if_result
                    if predicate is None or not predicate(result):
                        return result  # type: ignore[no-any-return]
                    error = None
                # Outside the except block: later attempts' errors do not chain to this one.
                delay = self._decide(error, attempt, previous, start)
                if delay is None:
                    if error is None:
                        return result  # type: ignore[no-any-return]
                    try:
                        raise error
                    finally:
                        error = None  # a frame holding the error its traceback holds: a cycle
                error = None
                if attempt == 1:  # the first retry: what the next ones need, once
                    # asyncio's own sleep on asyncio: anyio.sleep looks its backend up
                    # on every call, which costs more than a zero wait itself.
                    pause = asyncio.sleep if asyncio_loop() is not None else anyio.sleep
                    # This retry's own context (ctx None) is shared: attempts write to a copy.
                    own = ctx if ctx is not None else writable(get_context() or self._first)
                await pause(delay)
                if delay:  # a cancellation requested as the sleep ended wins (see _anyio)
                    await deliver_pending_cancel()
                previous = delay
                attempt += 1
                own.attempt = attempt
        finally:
            if token is not None:
                reset_context(token)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an ``async def`` function; the result keeps its signature."""
        if not callable(fn):
            raise ValueError(f"{self!r} decorates an async callable, got {fn!r}")
        label = self._label
        first = self._first
        should_retry = self._should_retry
        decide = self._decide
        call = self.call

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            # call(), written out (see above).
            if self._fault is not None:
                return await call(fn, *args, **kwargs)
            ctx = get_context()
            token = None
            if ctx is None:
                token = set_context(first)
            else:
                if type(ctx) is SharedContext:
                    ctx = writable(ctx)
                if label not in ctx.policies:
                    ctx.policies += (label,)
                ctx.attempt = 1
            try:
                start = now()
                attempt = 1
                previous = 0.0
                while True:
                    try:
                        result: Any = await fn(*args, **kwargs)
                    except Exception as exc:
                        if not should_retry(exc):
                            raise
                        error: Exception | None = exc
                    else:
                        predicate = self.retry_if_result
                        if predicate is None or not predicate(result):
                            return result  # type: ignore[no-any-return]
                        error = None
                    delay = decide(error, attempt, previous, start)
                    if delay is None:
                        if error is None:
                            return result  # type: ignore[no-any-return]
                        try:
                            raise error
                        finally:
                            error = None
                    error = None
                    if attempt == 1:
                        pause = asyncio.sleep if asyncio_loop() is not None else anyio.sleep
                        own = ctx if ctx is not None else writable(get_context() or first)
                    await pause(delay)
                    if delay:
                        await deliver_pending_cancel()
                    previous = delay
                    attempt += 1
                    own.attempt = attempt
            finally:
                if token is not None:
                    reset_context(token)

        return wrapper

    def _decide(
        self, error: Exception | None, attempt: int, previous: float, start: float
    ) -> float | None:
        """After a failed attempt (``error``, or a result to retry): the delay, or ``None``.

        ``None`` means give up (attempts spent, the deadline too close, or a
        retry hint above ``max_retry_after``): an error then carries a note
        naming the policy, and the give-up is announced; else the retry is.
        """
        if attempt >= self.attempts:
            self._give_up(error, attempt, start, "attempts")
            return None
        raw = None if error is None else self._retry_after(error)
        hint = None if raw is None else _hint_seconds(raw)
        if hint is not None:
            if self.max_retry_after is not None and hint > self.max_retry_after:
                self._give_up(error, attempt, start, "retry_after")
                return None
            delay = hint
        elif self._fixed_delay is not None:
            delay = self._fixed_delay
        else:
            delay = self.backoff.delay(attempt, previous, self._rng)
        if self.deadline is not None and (now() - start) + delay > self.deadline:
            self._give_up(error, attempt, start, "deadline")
            return None
        if self._listeners:
            name = None if error is None else type(error).__name__
            self._emit(RetryScheduled(self.kind, self.name, attempt, delay, name))
        return delay

    def _give_up(self, exc: Exception | None, attempt: int, start: float, why: str) -> None:
        """Note on the error (if any) why this retry gives up, and announce it."""
        elapsed = now() - start
        if exc is not None:
            attempts = f"{attempt} attempt{'s' if attempt != 1 else ''}"
            if why == "deadline":
                reason = f"at its deadline of {self.deadline}s after {attempts}"
            elif why == "retry_after":
                reason = (
                    f"after {attempts}: the retry hint exceeds "
                    f"max_retry_after={self.max_retry_after}s"
                )
            else:
                reason = f"after {attempts}"
            exc.add_note(
                f"resilient: Retry({self.name!r}) gave up {reason}, {elapsed:.3f}s elapsed"
            )
        if self._listeners:
            error = None if exc is None else type(exc).__name__
            self._emit(RetryGaveUp(self.kind, self.name, attempt, elapsed, why, error))
