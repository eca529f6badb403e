"""Fault injection: policies that fail, slow down or answer in place of the call.

``InjectFault`` raises an error, ``InjectLatency`` sleeps before the call and
``InjectResult`` returns a value without calling. They are ordinary policies:
put one in a pipeline (innermost, where the real downstream would fail) to see
the policies around it react, in a test or in staging and production behind a
switch (``enabled=``).

Which calls are hit (all conditions must hold; none given: every call):

- ``enabled=True``: a bool, or a callable with no arguments read on each call.
- ``when=None``: a predicate on the call's own arguments. Only the calls it
  accepts are *matching* calls, numbered 1, 2, 3, ... for the options below.
- ``calls=None``: the matching call numbers hit, a collection
  (``range(5, 10)``: calls 5 to 9) or a predicate on the number.
- ``every=None``: hit every n-th matching call (n, 2n, 3n, ...).
- ``times=None``: hit at most this many calls in all (``times=3`` alone: the
  first three calls fail, then every call goes through).
- ``rate=None``: hit each remaining candidate with this probability, drawn
  from ``random.Random(seed)``. ``seed=None`` picks one, kept in ``.seed``,
  so a run can be replayed by passing it back.

``call_count`` counts the calls through the policy, ``injected`` the calls hit.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, ParamSpec, TypeAlias, TypeVar, cast, final

import anyio

from ._events import Observer
from ._policy import Policy
from ._validate import check_int, check_seconds

__all__ = ["InjectFault", "InjectLatency", "InjectResult"]

P = ParamSpec("P")
T = TypeVar("T")

Switch: TypeAlias = bool | Callable[[], bool]
CallSelection: TypeAlias = Collection[int] | Callable[[int], bool]
ErrorSpec: TypeAlias = type[Exception] | Exception | Callable[[], Exception]


class _Injector(Policy):
    """What the three injectors share: which calls are hit, and the counters."""

    def __init__(
        self,
        name: str,
        *,
        rate: float | None,
        times: int | None,
        calls: CallSelection | None,
        every: int | None,
        when: Callable[..., bool] | None,
        enabled: Switch,
        seed: int | None,
        observers: Sequence[Observer],
    ) -> None:
        super().__init__(name, observers)
        owner = f"{type(self).__name__}({name!r})"
        if rate is not None and (
            not isinstance(rate, int | float)
            or isinstance(rate, bool)
            or not (0.0 <= rate <= 1.0)  # NaN fails this too
        ):
            raise ValueError(f"{owner}: rate must be a number in [0, 1], got {rate!r}")
        self.rate = None if rate is None else float(rate)
        self.times = None if times is None else check_int(owner, "times", times, minimum=0)
        if calls is not None and (
            isinstance(calls, str | bytes) or not (callable(calls) or isinstance(calls, Collection))
        ):
            raise ValueError(
                f"{owner}: calls must be a collection of call numbers or a predicate, got {calls!r}"
            )
        self.calls = calls
        self.every = None if every is None else check_int(owner, "every", every, minimum=1)
        if when is not None and not callable(when):
            raise ValueError(f"{owner}: when must be a predicate, got {when!r}")
        self.when = when
        self._enabled: Switch = True
        self.enabled = enabled
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"{owner}: seed must be an int or None, got {seed!r}")
        self.seed: int = random.randrange(2**32) if seed is None else seed
        self._rng = random.Random(self.seed)
        self.call_count = 0
        self.injected = 0
        self._matched = 0

    @property
    def enabled(self) -> Switch:
        """``True``/``False``, or a callable read on every call; settable."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: Switch) -> None:
        if not (isinstance(value, bool) or callable(value)):
            raise ValueError(
                f"{type(self).__name__}({self.name!r}): enabled must be a bool or a "
                f"callable, got {value!r}"
            )
        self._enabled = value

    def _hits(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether this call is hit; counts it either way."""
        self.call_count += 1
        enabled = self._enabled
        if not (enabled if isinstance(enabled, bool) else enabled()):
            return False
        if self.when is not None and not self.when(*args, **kwargs):
            return False
        self._matched += 1
        n = self._matched
        calls = self.calls
        if calls is not None and not (calls(n) if callable(calls) else n in calls):
            return False
        if self.every is not None and n % self.every:
            return False
        if self.times is not None and self.injected >= self.times:
            return False
        # Drawn last, so the random sequence depends only on the candidates:
        # the same calls with the same seed hit the same calls.
        if self.rate is not None and self._rng.random() >= self.rate:
            return False
        self.injected += 1
        return True


def _error_factory(owner: str, error: object) -> Callable[[], Exception]:
    """A function making a fresh exception for each injected failure."""
    message = f"fault injected by {owner}"
    if isinstance(error, type):
        if not issubclass(error, Exception):
            raise ValueError(
                f"{owner}: error must be an Exception subclass, an instance or a "
                f"factory, got {error!r}"
            )
        cls = error
        try:
            cls(message)
        except Exception as exc:
            raise ValueError(
                f"{owner}: error={error!r} cannot be built from a message ({exc}); "
                "pass an instance or a factory (error=lambda: ...)"
            ) from exc
        return lambda: cls(message)
    if isinstance(error, BaseException):
        if not isinstance(error, Exception):
            raise ValueError(f"{owner}: error must be an Exception, got {error!r}")
        template = error

        def fresh() -> Exception:
            # A copy per failure, so notes and tracebacks added on the way up
            # (Retry adds a note) never pile up on one shared object.
            exc = copy.copy(template)
            exc.__dict__.pop("__notes__", None)
            exc.__traceback__ = exc.__cause__ = exc.__context__ = None
            return exc

        try:
            fresh()
        except Exception as exc:
            raise ValueError(
                f"{owner}: error={error!r} cannot be copied ({exc}); "
                "pass a factory instead (error=lambda: ...)"
            ) from exc
        return fresh
    if callable(error):
        factory = error

        def checked() -> Exception:
            exc = factory()
            if not isinstance(exc, Exception):
                raise TypeError(f"{owner}: the error factory returned {exc!r}, not an Exception")
            return exc

        return checked
    raise ValueError(
        f"{owner}: error must be an Exception subclass, an instance or a factory, got {error!r}"
    )


@final
class InjectFault(_Injector):
    """``InjectFault(name, *, error, rate=None, times=None, calls=None, every=None,
    when=None, enabled=True, seed=None)``: raise ``error`` instead of calling.

    ``error`` is an ``Exception`` subclass (built with a message naming this
    policy), an instance (a copy is raised each time), or a factory called
    with no arguments. See the module docstring for which calls are hit.
    """

    kind = "inject_fault"

    def __init__(
        self,
        name: str,
        *,
        error: ErrorSpec,
        rate: float | None = None,
        times: int | None = None,
        calls: CallSelection | None = None,
        every: int | None = None,
        when: Callable[..., bool] | None = None,
        enabled: Switch = True,
        seed: int | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(
            name,
            rate=rate,
            times=times,
            calls=calls,
            every=every,
            when=when,
            enabled=enabled,
            seed=seed,
            observers=observers,
        )
        self.error = error
        self._make_error = _error_factory(f"InjectFault({name!r})", error)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        if self._hits(args, kwargs):
            raise self._make_error()
        return await fn(*args, **kwargs)


@final
class InjectLatency(_Injector):
    """``InjectLatency(name, *, seconds, rate=None, times=None, calls=None,
    every=None, when=None, enabled=True, seed=None)``: sleep, then call.

    ``seconds`` (finite, >= 0) are slept on the loop clock before the call, so
    a surrounding ``Timeout`` or a breaker's slow-call measure sees them.
    """

    kind = "inject_latency"

    def __init__(
        self,
        name: str,
        *,
        seconds: float,
        rate: float | None = None,
        times: int | None = None,
        calls: CallSelection | None = None,
        every: int | None = None,
        when: Callable[..., bool] | None = None,
        enabled: Switch = True,
        seed: int | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(
            name,
            rate=rate,
            times=times,
            calls=calls,
            every=every,
            when=when,
            enabled=enabled,
            seed=seed,
            observers=observers,
        )
        self.seconds = check_seconds(
            f"InjectLatency({name!r})", "seconds", seconds, allow_zero=True
        )

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        if self._hits(args, kwargs):
            await anyio.sleep(self.seconds)
        return await fn(*args, **kwargs)


@final
class InjectResult(_Injector):
    """``InjectResult(name, *, value, rate=None, times=None, calls=None,
    every=None, when=None, enabled=True, seed=None)``: return ``value``
    without calling (the same object each time)."""

    kind = "inject_result"

    def __init__(
        self,
        name: str,
        *,
        value: object,
        rate: float | None = None,
        times: int | None = None,
        calls: CallSelection | None = None,
        every: int | None = None,
        when: Callable[..., bool] | None = None,
        enabled: Switch = True,
        seed: int | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(
            name,
            rate=rate,
            times=times,
            calls=calls,
            every=every,
            when=when,
            enabled=enabled,
            seed=seed,
            observers=observers,
        )
        self.value = value

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        if self._hits(args, kwargs):
            return cast(T, self.value)
        return await fn(*args, **kwargs)
