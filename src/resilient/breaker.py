"""Circuit breaker: stop calling a dependency that keeps failing, try it again later.

States and transitions (anything else is a bug and raises)::

                  failure or slow rate >= threshold (or N failures in a row)
       CLOSED  ───────────────────────────────────────────────▶  OPEN
         ▲                                                         │ open_duration passes
         │ every trial recorded, rates below both thresholds      ▼ (seen lazily)
         └─────────────────────────────────────────────────── HALF_OPEN
                                         trials fail, or run too long │
                             OPEN (open duration * multiplier) ◀──────┘

       force_open() → FORCED_OPEN    disable() → DISABLED    reset() → CLOSED

Each state is one small object (``_Closed``, ``_Open``, ``_HalfOpen``,
``_ForcedOpen``, ``_Disabled``) behind one interface: ``tick`` (a transition
due by the clock), ``admit``, ``record`` and ``release``. A transition
replaces the state object whole, through :meth:`CircuitBreaker._set_state`,
which checks the table ``_TRANSITIONS``. The identity of the state object
marks a *period*: a call remembers the state that admitted it, and when it
ends in another period its outcome is stale and changes nothing.

Every decision (read the state, decide, write it) runs without an await in
between, so concurrent anyio tasks, which interleave only at awaits, always
see a consistent state: e.g. HALF_OPEN admits exactly ``half_open_max_calls``
trials however many calls arrive at once.

Where the state lives: the breaker's ``_state`` (written only by
``_set_state``) and its window (written only by ``_Closed``: ``record``,
and ``clear`` when a CLOSED period starts). A shared store (``store=``, see
:mod:`resilient.stores`) plugs in there, through one link: ``_set_state``
tells it every change (it publishes this breaker's own decisions),
``_advance`` first adopts the fleet's newer state (a jump outside the table:
the fleet decided it), CLOSED evaluates its window plus the other breakers'
totals, and a HALF_OPEN trial also needs the fleet's permit (the one await
before a call, on that rare path). With a store every call takes the slow
path; without one the fast path is the same code and the slow path checks
``_shared``.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, ParamSpec, Protocol, TypeVar, final

from . import _time
from ._events import CallFinished, CallRejected, Observer, Outcome, StateChanged
from ._policy import Policy
from ._time import clock as _clock
from ._time import now as _now
from ._validate import (
    ExceptionFilter,
    check_exception_types,
    check_int,
    check_name,
    check_seconds,
    check_unit_interval,
    matches,
)
from ._window import CountWindow, TimeWindow, Window
from .errors import CircuitOpenError

if TYPE_CHECKING:
    from .stores import BreakerLink, BreakerStore, How, SharedView

__all__ = ["CircuitBreaker", "CircuitMetrics", "CircuitState"]

P = ParamSpec("P")
T = TypeVar("T")


class CircuitState(enum.StrEnum):
    """The state a breaker is in (values are the lower-case names used in events)."""

    CLOSED = "closed"
    """Calls run; outcomes are recorded and evaluated."""
    OPEN = "open"
    """Calls are rejected until ``open_duration`` has passed."""
    HALF_OPEN = "half_open"
    """Up to ``half_open_max_calls`` trial calls run; their outcomes decide."""
    FORCED_OPEN = "forced_open"
    """Every call is rejected until ``reset()`` or ``disable()``."""
    DISABLED = "disabled"
    """Every call runs; nothing is recorded."""


CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN
DISABLED = CircuitState.DISABLED

# The legal transitions: reset() reaches CLOSED from anywhere (CLOSED itself
# included: a fresh period with an empty window); the clock moves OPEN to
# HALF_OPEN; trials move HALF_OPEN to CLOSED or OPEN; the manual switches
# reach FORCED_OPEN and DISABLED from anywhere else.
_TRANSITIONS: dict[CircuitState, frozenset[CircuitState]] = {
    CLOSED: frozenset({CLOSED, OPEN, FORCED_OPEN, DISABLED}),
    OPEN: frozenset({CLOSED, HALF_OPEN, FORCED_OPEN, DISABLED}),
    HALF_OPEN: frozenset({CLOSED, OPEN, FORCED_OPEN, DISABLED}),
    FORCED_OPEN: frozenset({CLOSED, DISABLED}),
    DISABLED: frozenset({CLOSED, FORCED_OPEN}),
}


@dataclass(frozen=True, slots=True)
class CircuitMetrics:
    """A snapshot of a breaker's counts and rates.

    CLOSED (and FORCED_OPEN/DISABLED entered from it): the window, with both
    rates 0.0 while it holds fewer than ``minimum_calls`` calls in CLOSED.
    OPEN: the counts that tripped it (the window, or the trials). HALF_OPEN:
    the trials recorded so far, rates with no minimum.
    """

    failure_rate: float
    slow_call_rate: float
    calls: int
    failed_calls: int
    slow_calls: int
    not_permitted_calls: int
    store_degraded: bool | None = None
    """With a shared store: True while it is unreachable (local state only); else None."""


class _Counts(Protocol):
    """What metrics read: a window (with a store, plus the fleet's) or a half-open's trials."""

    @property
    def calls(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def slow(self) -> int: ...

    def expire(self, now: float) -> None: ...


_Rejection = tuple[str, float | None]  # (reason, retry_after)
_FaultHook = Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]


# ``CircuitOpenError(name, retry_after)`` without running its __init__: the
# exception's own __new__ stores the arguments as ``args``, which is all the
# error holds (its message is formatted when read). A rejection builds one
# per call; this is the cheapest way CPython offers.
_new_error = CircuitOpenError.__new__


def _open_error(name: str, retry_after: float | None) -> CircuitOpenError:
    """``CircuitOpenError(name, retry_after)``, built as the hot path builds it."""
    return _new_error(CircuitOpenError, name, retry_after)


class _State:
    """One period of the breaker in one state: the interface every state implements.

    ``b`` is the breaker; ``counts`` what its metrics show in this state.
    """

    __slots__ = ("b", "counts")
    kind: ClassVar[CircuitState]
    b: CircuitBreaker
    counts: _Counts

    def tick(self, now: float) -> _State | None:
        """The state the clock has moved this one to at ``now``, if any."""
        return None

    def admit(self, now: float) -> _Rejection | None:
        """Admit a call (``None``) or say why not; takes any permit it needs."""
        return None

    def record(self, failed: bool, slow: bool, now: float | None) -> None:
        """Take the outcome of a call this state admitted (``now``: its end, if read)."""

    def release(self) -> None:
        """A call this state admitted ended unrecorded (ignored, cancelled)."""


@final
class _Closed(_State):
    """Calls run; each outcome goes into the window and the rates are evaluated.

    The options the hot path needs are copied in, one attribute away
    (``failure_if`` it reads off the breaker, or the decorator's closure).
    """

    __slots__ = (
        "consecutive",
        "granted",
        "minimum",
        "skip",
        "skippable",
        "tally",
        "time_window",
        "window",
    )
    kind = CLOSED

    def __init__(self, b: CircuitBreaker) -> None:
        self.b = b
        window = b._window
        if window.calls:
            window.clear()  # every CLOSED period starts with a fresh window
        self.window = window
        shared = b._shared
        self.counts = window if shared is None else shared.counts(window)  # + the fleet's
        self.time_window = type(window) is TimeWindow  # needs the time of each outcome
        self.consecutive = 0  # recorded failures in a row in this period
        self.minimum = b._minimum
        # Skipping: in a count window, a success written over a slot that holds
        # a success changes nothing (no total, no rate, and the run of failures
        # is already broken) but the write position. So after recording a
        # success, the state grants the fast path as many successes as the next
        # slots hold ("skip"; up to 64 per grant); it returns after counting one
        # down, and the next record moves the position past them. A healthy
        # breaker, and one whose few failures are far from the write position,
        # records one call in 64. Only a plain success is taken so (not failed
        # by ``failure_if``, not slow: the fast path classifies the outcome
        # first when the breaker has either), and only without a store (which
        # has its own path).
        self.skip = self.granted = 0
        self.skippable = type(window) is CountWindow and shared is None
        # Tallying: in a time window, recording a plain success (neither
        # failed nor slow) that ends before the current bucket is due to roll,
        # with nothing expired since the last record, adds one to the window's
        # calls and breaks the run of failures, and that is all, unless the
        # window thereby reaches its minimum (an evaluation is due then). The
        # fast path does those two writes itself instead of calling record()
        # (two Python calls, a third of a timed breaker's cost). ``tally`` is
        # the window when it may (a time window, no store), else None.
        self.tally = window if type(window) is TimeWindow and shared is None else None

    def record(self, failed: bool, slow: bool, now: float | None) -> None:
        window = self.window
        if self.granted:  # the fast path took some successes unrecorded (see above)
            window.advance(self.granted - self.skip)  # type: ignore[union-attr]
            self.granted = self.skip = 0
        # Evaluate when a rate may have risen, or the window just reached its
        # minimum; otherwise the last evaluation (below both thresholds) holds.
        if window.record(failed, slow, now) or window.calls == self.minimum:
            self.evaluate(failed, now)
        else:
            self.consecutive = 0  # a success (not slow) breaks a run of failures
        if self.skippable and not failed and not slow:
            self.granted = self.skip = window.successes_ahead()  # type: ignore[union-attr]

    def evaluate(self, failed: bool, now: float | None) -> None:
        """After a record: count the run of failures, open if a limit is reached."""
        b = self.b
        counts = self.counts  # the window itself, unless a store adds the others'
        if failed:
            self.consecutive += 1
            limit = b.consecutive_failures
            if limit is not None and self.consecutive >= limit:
                b._trip(now, counts)
                return
        else:
            self.consecutive = 0
        calls = counts.calls
        if calls >= self.minimum and (
            counts.failed / calls >= b.failure_rate_threshold
            or counts.slow / calls >= b.slow_call_rate_threshold
        ):
            b._trip(now, counts)

    def check(self, now: float) -> None:
        """With a store: open if the fleet's rates reach a threshold (a success can bring
        the fleet to its minimum; the others' totals can change between records)."""
        counts = self.counts
        calls = counts.calls
        b = self.b
        if calls >= self.minimum and (
            counts.failed / calls >= b.failure_rate_threshold
            or counts.slow / calls >= b.slow_call_rate_threshold
        ):
            b._trip(now, counts)

    def on_error(self, exc: Exception, read: Callable[[], float] | None, start: float) -> None:
        """Record an exception raised in the CLOSED fast path (``read``: its clock, if timed)."""
        outcome = self.b._classify(exc)
        if outcome == "ignored":
            return
        if read is not None:
            end: float | None = read()
            slow = end - start > self.b.slow_call_duration  # type: ignore[operator]
        else:
            end = _now() if self.time_window else None
            slow = False
        self.record(outcome == "failure", slow, end)


@final
class _Open(_State):
    """Calls are rejected until ``until``; then the next look finds HALF_OPEN."""

    __slots__ = ("duration", "until")
    kind = OPEN

    def __init__(
        self, b: CircuitBreaker, opened_at: float | None, duration: float, counts: _Counts
    ) -> None:
        if opened_at is None:  # a count-window breaker that never read the clock
            opened_at = _now()
        self.b = b
        self.duration = duration
        self.until = opened_at + duration
        self.counts = counts

    def tick(self, now: float) -> _State | None:
        if now >= self.until:
            return _HalfOpen(self.b, self.duration)
        return None

    def admit(self, now: float) -> _Rejection | None:
        return "open", self.until - now


@final
class _HalfOpen(_State):
    """At most ``half_open_max_calls`` trials; when all are recorded, they decide.

    The instance is also the trials' counts (``calls``, ``failed``, ``slow``).
    """

    __slots__ = ("adopted", "calls", "deadline", "duration", "failed", "slow", "taken")
    kind = HALF_OPEN

    def __init__(self, b: CircuitBreaker, duration: float) -> None:
        self.b = b
        self.counts = self
        self.duration = duration  # the open duration that led here, for backoff
        self.taken = 0  # permits out: trials running or recorded
        self.calls = self.failed = self.slow = 0  # trials recorded
        # When running trials are due to have finished: set by a trial that
        # starts while none runs, cleared whenever none runs here (no trial, no
        # timeout) unless the state was adopted from a fleet whose trial runs
        # elsewhere: that one is watched until a verdict comes.
        self.deadline: float | None = None
        self.adopted = False

    def expire(self, now: float) -> None:
        """Trials do not expire."""

    def tick(self, now: float) -> _State | None:
        if self.deadline is not None and now >= self.deadline:
            # Trials ran too long: re-open as of the deadline; they are stale now.
            b = self.b
            return _Open(b, self.deadline, b._backed_off(self.duration), self)
        return None

    def admit(self, now: float) -> _Rejection | None:
        b = self.b
        if self.taken >= b.half_open_max_calls:
            return "half_open_full", None
        self.taken += 1
        if self.deadline is None:
            self.deadline = now + b._half_open_max_duration
        return None

    def record(self, failed: bool, slow: bool, now: float | None) -> None:
        self.calls += 1
        if failed:
            self.failed += 1
        if slow:
            self.slow += 1
        b = self.b
        n = self.calls
        if n < b.half_open_max_calls:
            self._stop_clock_if_idle()
            return
        if (
            self.failed / n >= b.failure_rate_threshold
            or self.slow / n >= b.slow_call_rate_threshold
        ):
            b._set_state(_Open(b, now, b._backed_off(self.duration), self))
        else:
            b._set_state(_Closed(b))

    def release(self) -> None:
        self.taken -= 1
        self._stop_clock_if_idle()

    def _stop_clock_if_idle(self) -> None:
        """No trial running here, none watched elsewhere: nothing can overrun, no timeout."""
        if self.taken == self.calls and not self.adopted:
            self.deadline = None


@final
class _ForcedOpen(_State):
    """Every call is rejected, with no known time to retry."""

    __slots__ = ()
    kind = FORCED_OPEN

    def __init__(self, b: CircuitBreaker, counts: _Counts) -> None:
        self.b = b
        self.counts = counts

    def admit(self, now: float) -> _Rejection | None:
        return "forced_open", None


@final
class _Disabled(_State):
    """Every call runs unrecorded (the breaker passes calls straight through)."""

    __slots__ = ()
    kind = DISABLED

    def __init__(self, b: CircuitBreaker, counts: _Counts) -> None:
        self.b = b
        self.counts = counts


@final
class CircuitBreaker(Policy):
    """A circuit breaker. See the module docstring for the states.

    Arguments (keyword-only after ``name``), with their defaults:

    - ``failure_rate_threshold=0.5``: in (0, 1]; open when
      ``failed / calls >= threshold``.
    - ``slow_call_duration=None``: seconds (>= 0); a call taking strictly
      longer is slow. ``None``: no call is ever slow.
    - ``slow_call_rate_threshold=1.0``: in (0, 1]; open when
      ``slow / calls >= threshold``.
    - ``window=CountWindow(100)``: the last 100 calls; or
      ``TimeWindow(seconds, bucket=1.0)``.
    - ``minimum_calls=10``: >= 1; no rate decision while the window holds
      fewer calls (the call just recorded counts; capped at a count window's
      size; not used in HALF_OPEN).
    - ``consecutive_failures=None``: >= 1; also open after this many recorded
      failures in a row in CLOSED (a success breaks the run, an ignored call
      does not).
    - ``open_duration=30.0``: seconds > 0 in OPEN before HALF_OPEN.
    - ``open_duration_multiplier=1.0``: >= 1; each re-open from HALF_OPEN
      multiplies the open duration...
    - ``open_duration_max=None``: ...up to this many seconds (``None``: no
      cap); back to ``open_duration`` once CLOSED.
    - ``half_open_max_calls=1``: >= 1 trial calls in HALF_OPEN.
    - ``half_open_max_duration=None``: seconds from the first trial's start;
      trials still unfinished then re-open the breaker. ``None``:
      ``open_duration``.
    - ``failure_on=(Exception,)``: exception types, or a predicate on the
      exception, that count as failures; other exceptions count as successes.
    - ``ignore=()``: exception types (or a predicate) never recorded; wins
      over ``failure_on``.
    - ``failure_if=None``: a predicate on a returned value; true counts the
      call as failed.
    - ``store=None``: a :class:`~resilient.stores.BreakerStore` sharing this
      breaker's state with the breakers of the same name on that store
      (``MemoryStore`` in one process, ``RedisStore`` across processes and
      hosts); see ``docs/stores.md``.
    - ``observers=()``: observers of this breaker's events.
    """

    __slots__ = (
        "_failure_if",
        "_failure_on",
        "_fault_",
        "_half_open_max_duration",
        "_hot",
        "_hot_open",
        "_ignore",
        "_listeners_",
        "_not_permitted",
        "_own_observers",
        "_shared",
        "_state",
        "_window",
        "consecutive_failures",
        "failure_rate_threshold",
        "half_open_max_calls",
        "minimum_calls",
        "name",
        "open_duration",
        "open_duration_max",
        "open_duration_multiplier",
        "slow_call_duration",
        "slow_call_rate_threshold",
    )
    kind = "circuit_breaker"

    def __init__(
        self,
        name: str,
        *,
        failure_rate_threshold: float = 0.5,
        slow_call_duration: float | None = None,
        slow_call_rate_threshold: float = 1.0,
        window: CountWindow | TimeWindow | None = None,
        minimum_calls: int = 10,
        consecutive_failures: int | None = None,
        open_duration: float = 30.0,
        open_duration_multiplier: float = 1.0,
        open_duration_max: float | None = None,
        half_open_max_calls: int = 1,
        half_open_max_duration: float | None = None,
        failure_on: ExceptionFilter | type[Exception] = (Exception,),
        ignore: ExceptionFilter | type[Exception] = (),
        failure_if: Callable[[Any], bool] | None = None,
        store: BreakerStore | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        owner = f"CircuitBreaker({check_name('CircuitBreaker', name)!r})"
        self.failure_rate_threshold = check_unit_interval(
            owner, "failure_rate_threshold", failure_rate_threshold
        )
        self.slow_call_duration = (
            None
            if slow_call_duration is None
            else check_seconds(owner, "slow_call_duration", slow_call_duration, allow_zero=True)
        )
        self.slow_call_rate_threshold = check_unit_interval(
            owner, "slow_call_rate_threshold", slow_call_rate_threshold
        )
        if window is None:
            own: Window = CountWindow(100)
        elif isinstance(window, CountWindow | TimeWindow):
            own = window.fresh()  # a window object may configure several breakers
        else:
            raise ValueError(f"{owner}: window must be a CountWindow or TimeWindow, got {window!r}")
        self._window = own
        self.minimum_calls = check_int(owner, "minimum_calls", minimum_calls, minimum=1)
        self.consecutive_failures = (
            None
            if consecutive_failures is None
            else check_int(owner, "consecutive_failures", consecutive_failures, minimum=1)
        )
        self.open_duration = check_seconds(owner, "open_duration", open_duration)
        m = open_duration_multiplier
        if not isinstance(m, int | float) or isinstance(m, bool) or not math.isfinite(m) or m < 1:
            raise ValueError(
                f"{owner}: open_duration_multiplier must be a finite number >= 1, got {m!r}"
            )
        self.open_duration_multiplier = float(m)
        if open_duration_max is None:
            self.open_duration_max: float | None = None
        else:
            self.open_duration_max = check_seconds(owner, "open_duration_max", open_duration_max)
            if self.open_duration_max < self.open_duration:
                raise ValueError(
                    f"{owner}: open_duration_max must be >= open_duration "
                    f"({open_duration!r}), got {open_duration_max!r}"
                )
        self.half_open_max_calls = check_int(
            owner, "half_open_max_calls", half_open_max_calls, minimum=1
        )
        self._half_open_max_duration = (
            self.open_duration
            if half_open_max_duration is None
            else check_seconds(owner, "half_open_max_duration", half_open_max_duration)
        )
        self._failure_on = check_exception_types(owner, "failure_on", failure_on)
        self._ignore = check_exception_types(owner, "ignore", ignore)
        if failure_if is not None and not callable(failure_if):
            raise ValueError(f"{owner}: failure_if must be a predicate, got {failure_if!r}")
        self._failure_if = failure_if
        self._shared: BreakerLink | None = None
        if store is not None:
            from .stores import BreakerStore  # here: no import cost (or cycle) without a store

            if not isinstance(store, BreakerStore):
                raise ValueError(
                    f"{owner}: store must be a BreakerStore (resilient.stores.MemoryStore, "
                    f"resilient.stores.redis.RedisStore), got {store!r}"
                )
            self._shared = store.attach(self, name)
        self._not_permitted = 0
        self._fault_: _FaultHook | None = None
        self._listeners_: tuple[Observer, ...] = ()
        self._hot: _Closed | None = None
        self._hot_open: _Open | None = None
        self._state: _State = _Closed(self)
        # Last: the base registers the breaker and may hand it to hooks.
        super().__init__(name, observers)
        self._refresh_hot()

    @property
    def window(self) -> CountWindow | TimeWindow:
        """This breaker's own window (a copy of the one passed as ``window=``)."""
        return self._window

    @property
    def _minimum(self) -> int:
        """``minimum_calls``, capped at a count window's size (all it can hold).

        Computed, not stored: it is read once per CLOSED period (which copies
        it) and by ``metrics``, and a slot costs every breaker 8 bytes.
        """
        cap = self._window.capacity
        return self.minimum_calls if cap is None else min(self.minimum_calls, cap)

    # -- the one-check hot path --------------------------------------------------
    #
    # ``_hot`` is the CLOSED state object while nothing else needs the slow
    # path (no observer, no injected fault), else None: the hot path reads one
    # attribute. It is recomputed whenever the state, the listeners or the
    # fault change; the registry and the fault registry assign those two
    # attributes, hence the properties.

    @property
    def _listeners(self) -> tuple[Observer, ...]:
        return self._listeners_

    @_listeners.setter
    def _listeners(self, value: tuple[Observer, ...]) -> None:
        self._listeners_ = value
        self._refresh_hot()

    @property
    def _fault(self) -> _FaultHook | None:
        return self._fault_

    @_fault.setter
    def _fault(self, value: _FaultHook | None) -> None:
        self._fault_ = value
        self._refresh_hot()

    def _refresh_hot(self) -> None:
        state = getattr(self, "_state", None)
        # A store needs the slow path (adoption, fleet evaluation, trial permits).
        quiet = self._fault_ is None and not self._listeners_ and self._shared is None
        self._hot = state if quiet and type(state) is _Closed else None
        self._hot_open = state if quiet and type(state) is _Open else None

    # -- state machine plumbing ----------------------------------------------------

    def _set_state(self, new: _State, how: How = "local") -> None:
        """The one place the state changes: checked against the table, announced.

        ``how``: ``"local"`` (decided here), ``"manual"`` (a switch) or
        ``"adopted"`` (the fleet's state from the store: any jump is legal).
        """
        old = self._state
        if new.kind not in _TRANSITIONS[old.kind] and how != "adopted":
            raise RuntimeError(f"{self!r}: illegal transition {old.kind.value} -> {new.kind.value}")
        self._state = new
        self._refresh_hot()
        shared = self._shared
        if shared is not None:
            if type(new) is _Open:
                shared.on_state(new.kind, new.until, new.duration, how)
            else:
                shared.on_state(new.kind, 0.0, 0.0, how)
        if self._listeners_ and new.kind is not old.kind:
            self._emit(StateChanged(self.kind, self.name, old.kind.value, new.kind.value))

    def _advance(self, now: float) -> _State:
        """Adopt the fleet's newer state (with a store), then apply the transitions
        the clock has made due by ``now``; the current state."""
        shared = self._shared
        if shared is not None:
            view = shared.pull()
            if view is not None:
                self._adopt(view, now)
        state = self._state
        while (new := state.tick(now)) is not None:
            self._set_state(new)
            state = new
        return state

    def _adopt(self, view: SharedView, now: float) -> None:
        """Take the fleet's state as this breaker's own: a new period."""
        old = self._state
        kind = view.state
        new: _State
        if kind is CLOSED:
            new = _Closed(self)
        elif kind is OPEN:
            new = _Open(self, view.until - view.duration, view.duration, old.counts)
        elif kind is HALF_OPEN:
            new = half_open = _HalfOpen(self, view.duration)
            # A trial runs somewhere in the fleet: if no verdict comes in time, re-open.
            half_open.deadline = now + self._half_open_max_duration
            half_open.adopted = True
        elif kind is FORCED_OPEN:
            new = _ForcedOpen(self, old.counts)
        else:
            new = _Disabled(self, old.counts)
        self._set_state(new, "adopted")

    def _resync(self, now: float) -> None:
        """A store brought news: adopt the fleet's state, evaluate the fleet's rates."""
        state = self._advance(now)
        if type(state) is _Closed:
            state.counts.expire(now)
            state.check(now)

    def _trip(self, now: float | None, counts: _Counts) -> None:
        """CLOSED -> OPEN for ``open_duration``, as of ``now``."""
        self._set_state(_Open(self, now, self.open_duration, counts))

    def _backed_off(self, duration: float) -> float:
        """The open duration after a re-open from HALF_OPEN."""
        longer = duration * self.open_duration_multiplier
        cap = self.open_duration_max
        return longer if cap is None else min(longer, cap)

    def _classify(self, exc: Exception) -> Outcome:
        if matches(self._ignore, exc):
            return "ignored"
        return "failure" if matches(self._failure_on, exc) else "success"

    # -- calls -------------------------------------------------------------------
    #
    # Two paths. The fast one serves CLOSED and the rejections of OPEN while
    # nobody listens and no fault is injected: it is written out in the
    # decorator's wrapper and, identically, in call() (a shared helper would
    # cost a coroutine frame per call). Everything else takes _call, which
    # handles every state with events. Both record through the state objects.

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an ``async def`` function; the result keeps its signature."""
        if not callable(fn):
            raise ValueError(f"{self!r} decorates an async callable, got {fn!r}")
        slow_path = self._call
        sd = self.slow_call_duration
        timed = sd is not None
        name = self.name
        failure_if = self._failure_if
        plain = failure_if is None and not timed  # every success is a plain one

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            state = self._hot
            if state is not None:  # CLOSED
                read = None
                start = 0.0
                if timed:
                    read = _clock()  # one lookup, two readings
                    start = read()
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    if self._state is state:  # else: admitted in an earlier period, stale
                        state.on_error(exc, read, start)
                    raise
                # A cancellation (not an Exception) passes: CLOSED holds no permit.
                skip = state.skip
                if skip and plain:  # a success over a success: nothing to record (see _Closed)
                    state.skip = skip - 1
                    return result
                if self._state is state:  # else: admitted in an earlier period, stale
                    failed = failure_if is not None and bool(failure_if(result))
                    if read is not None:
                        end: float | None = read()
                        slow = end - start > sd  # type: ignore[operator]
                    else:
                        end = _now() if state.time_window else None
                        slow = False
                    if skip and not (failed or slow):  # a plain success over a success
                        state.skip = skip - 1
                    elif (
                        (tally := state.tally) is not None
                        and end is not None
                        and not (failed or slow)
                        and end < tally._next
                        and not tally._dropped
                        and tally.calls + 1 != state.minimum
                    ):  # a success that only counts (see _Closed.__init__)
                        tally.calls += 1
                        state.consecutive = 0
                    else:
                        state.record(failed, slow, end)
                return result
            opened = self._hot_open
            if opened is not None:  # OPEN
                left = opened.until - _now()
                if left > 0:
                    self._not_permitted += 1
                    raise _new_error(CircuitOpenError, name, left)
            return await slow_path(fn, args, kwargs)

        return wrapper

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker."""
        state = self._hot
        if state is not None:  # CLOSED: as in __call__'s wrapper
            read = None
            start = 0.0
            sd = self.slow_call_duration
            if sd is not None:
                read = _clock()
                start = read()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                if self._state is state:
                    state.on_error(exc, read, start)
                raise
            failure_if = self._failure_if
            skip = state.skip
            if skip and read is None and failure_if is None:
                state.skip = skip - 1
                return result
            if self._state is state:
                failed = failure_if is not None and bool(failure_if(result))
                if read is not None:
                    end: float | None = read()
                    slow = end - start > sd  # type: ignore[operator]
                else:
                    end = _now() if state.time_window else None
                    slow = False
                if skip and not (failed or slow):
                    state.skip = skip - 1
                elif (
                    (tally := state.tally) is not None
                    and end is not None
                    and not (failed or slow)
                    and end < tally._next
                    and not tally._dropped
                    and tally.calls + 1 != state.minimum
                ):  # as in __call__'s wrapper
                    tally.calls += 1
                    state.consecutive = 0
                else:
                    state.record(failed, slow, end)
            return result
        opened = self._hot_open
        if opened is not None:  # OPEN
            left = opened.until - _now()
            if left > 0:
                self._not_permitted += 1
                raise _new_error(CircuitOpenError, self.name, left)
        return await self._call(fn, args, kwargs)

    async def _call(
        self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """Every state, with events: admit, run, classify, record."""
        if self._fault_ is not None:
            fn = self._fault_(fn)
        start = _now()
        state = self._advance(start)
        if state.kind is DISABLED:
            return await fn(*args, **kwargs)
        rejection = state.admit(start)
        if rejection is not None:
            self._reject(*rejection)
        trial = False
        shared = self._shared
        if shared is not None and state.kind is HALF_OPEN:
            trial = await self._fleet_trial(shared, state)
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            error = type(exc).__name__
            try:
                outcome = self._classify(exc)
            except BaseException:  # a predicate raised: record nothing, return the permit
                self._finish(state, "ignored", start, error, trial)
                raise
            self._finish(state, outcome, start, error, trial)
            raise
        except BaseException as exc:  # cancellation: never counted, permit returned
            self._finish(state, "cancelled", start, type(exc).__name__, trial)
            raise
        failure_if = self._failure_if
        try:
            failed = failure_if is not None and bool(failure_if(result))
        except BaseException:  # as above
            self._finish(state, "ignored", start, None, trial)
            raise
        self._finish(state, "failure" if failed else "success", start, None, trial)
        return result

    async def _fleet_trial(self, shared: BreakerLink, state: _State) -> bool:
        """The fleet's permit for a trial HALF_OPEN admitted here; False: a local trial.

        The local permit is already taken, so at most ``half_open_max_calls``
        calls per breaker wait here; a refusal returns it and rejects.
        """
        try:
            granted = await shared.acquire_trial()
        except BaseException:
            state.release()
            raise
        if granted is None:
            return False  # store unreachable: fail-static, the local permit decides
        if not granted or self._state is not state:
            if granted:
                shared.release_trial()
            state.release()
            self._reject("half_open_full", None)
        return True

    def _reject(self, reason: str, retry_after: float | None) -> NoReturn:
        self._not_permitted += 1
        if self._listeners_:
            self._emit(CallRejected(self.kind, self.name, reason))
        raise _open_error(self.name, retry_after)

    def _finish(
        self, state: _State, outcome: Outcome, start: float, error: str | None, trial: bool = False
    ) -> None:
        """Record or release a call's outcome (``trial``: it holds a fleet permit)."""
        end = _now()
        duration = end - start
        sd = self.slow_call_duration
        slow = sd is not None and duration > sd
        self._advance(end)  # a transition the clock made due during the call
        if self._listeners_:
            self._emit(CallFinished(self.kind, self.name, outcome, duration, slow, error))
        if self._state is not state:
            return  # admitted in an earlier period: stale, changes nothing
        shared = self._shared
        if outcome == "success" or outcome == "failure":
            failed = outcome == "failure"
            if trial and shared is not None and shared.trial_done(failed, slow):
                self._advance(end)  # the store decides; it may have already
                return
            if shared is not None and type(state) is _Closed:
                state.counts.expire(end)  # the others' fresh totals, then evaluate the fleet's
                state.record(failed, slow, end)
                if self._state is state:
                    state.check(end)
                return
            state.record(failed, slow, end)
        else:
            state.release()
            if trial and shared is not None:
                shared.release_trial()

    # -- inspection and manual control ------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (a transition due by the clock is applied first)."""
        now = _time.now_or_none()
        if now is not None:
            return self._advance(now).kind
        return self._state.kind

    @property
    def metrics(self) -> CircuitMetrics:
        """Counts and rates now (time-window expiry applied inside a running loop)."""
        now = _time.now_or_none()
        state = self._state if now is None else self._advance(now)
        counts = state.counts
        if now is not None and state.kind is not OPEN:
            counts.expire(now)  # OPEN shows the counts that opened it, as they were
        calls = counts.calls
        if calls == 0 or (state.kind is CLOSED and calls < self._minimum):
            failure_rate = slow_rate = 0.0
        else:
            failure_rate = counts.failed / calls
            slow_rate = counts.slow / calls
        shared = self._shared
        return CircuitMetrics(
            failure_rate,
            slow_rate,
            calls,
            counts.failed,
            counts.slow,
            self._not_permitted,
            None if shared is None else shared.degraded,
        )

    def force_open(self) -> None:
        """Reject every call (FORCED_OPEN) until :meth:`reset` or :meth:`disable`."""
        if self._state.kind is not FORCED_OPEN:
            self._set_state(_ForcedOpen(self, self._state.counts), "manual")

    def disable(self) -> None:
        """Let every call through unrecorded (DISABLED) until :meth:`reset`/:meth:`force_open`."""
        if self._state.kind is not DISABLED:
            self._set_state(_Disabled(self, self._state.counts), "manual")

    def reset(self) -> None:
        """Back to CLOSED with an empty window; ``not_permitted_calls`` back to 0."""
        self._not_permitted = 0
        self._set_state(_Closed(self), "manual")

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r})"
