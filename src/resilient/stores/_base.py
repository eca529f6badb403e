"""What a shared store and the circuit breaker say to each other.

A breaker with ``store=`` keeps its own state machine and its own window, as
without a store, and talks to the store through one :class:`BreakerLink`
(``store.attach(breaker, name)``). The fleet's state is a *generation*: a
number that every shared transition raises. The link says which generation
this breaker's local state follows (``gen``); when the fleet's is newer,
:meth:`BreakerLink.pull` hands the breaker the fleet's state to adopt.

The rules every store implements (the memory store in Python, the Redis store
in Lua, atomically):

- **Publish** (a local transition): CLOSED -> OPEN on a trip, OPEN again when
  trials run too long, and the verdict of local trials while the store was
  unreachable, are compare-and-set: they apply only if the fleet is still at
  the generation the breaker followed (or, for a breaker that never synced,
  the fleet is CLOSED); else the fleet's newer state wins and the breaker
  adopts it. Two exceptions: a trip (OPEN) onto a CLOSED fleet always
  applies (failures seen while the store was unreachable are news), and an
  automatic CLOSED onto a CLOSED fleet changes nothing.
  Manual switches (``force_open()``, ``disable()``, ``reset()``) always apply.
- **Outcomes**: each breaker shares its own window's totals, tagged with the
  generation of its CLOSED period; the fleet's window is the sum of the totals
  tagged with the current generation. Only this breaker's own counts go to
  the store; the rates are evaluated by every breaker, on the fleet's totals.
- **HALF_OPEN**: a trial needs a permit from the store. The first permit
  after an OPEN period moves the fleet to HALF_OPEN; at most
  ``half_open_max_calls`` permits are given per HALF_OPEN generation. Trial
  outcomes are counted by the store; the one that completes the trials
  decides (re-open with the backed-off duration, or close), atomically.
- **Unreachable** (``degraded``): the breaker works on its local state alone
  (others' totals count as zero, trials are local) and its local transitions
  wait to be published when the store answers again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._window import Window
    from ..breaker import CircuitBreaker, CircuitState

__all__ = ["BreakerLink", "BreakerStore", "FleetCounts", "How", "SharedView"]

How = Literal["adopted", "local", "manual"]
"""Why a breaker's state changed: taken from the fleet, decided here, or switched by hand."""


@dataclass(frozen=True, slots=True)
class SharedView:
    """The fleet's state as a store knows it.

    ``gen``: the generation (0: nothing shared yet). ``until``: when an OPEN
    period ends, on this process's loop clock (0.0 in other states).
    ``duration``: the open duration of the current or last OPEN period, in
    seconds (what a re-open backs off from).
    """

    gen: int
    state: CircuitState
    until: float = 0.0
    duration: float = 0.0


@runtime_checkable
class BreakerStore(Protocol):
    """Somewhere several breakers share one state: :class:`~resilient.stores.MemoryStore`,
    :class:`~resilient.stores.redis.RedisStore`."""

    def attach(self, breaker: CircuitBreaker, name: str) -> BreakerLink:
        """The link of one breaker (named ``name``) to the shared state of that name."""
        ...


class BreakerLink(Protocol):
    """One breaker's end of a shared state. Every method returns at once, except
    :meth:`acquire_trial`, which may wait for the store (bounded by its timeout)."""

    gen: int
    """The fleet generation this breaker's local state follows."""

    @property
    def degraded(self) -> bool:
        """The store is unreachable (or not running): the breaker runs on local state."""
        ...

    def pull(self) -> SharedView | None:
        """The fleet's state, if newer than ``gen`` (then ``gen`` follows it: adopt it)."""
        ...

    def counts(self, window: Window) -> FleetCounts:
        """The counts this breaker evaluates in CLOSED: its ``window`` plus the others'."""
        ...

    def on_state(self, kind: CircuitState, until: float, duration: float, how: How) -> None:
        """The breaker's state changed; ``local`` and ``manual`` changes are published."""
        ...

    async def acquire_trial(self) -> bool | None:
        """A fleet-wide trial permit: granted, refused, or ``None`` (store unreachable)."""
        ...

    def trial_done(self, failed: bool, slow: bool) -> bool:
        """Report a permitted trial's outcome; ``False``: unreachable, decide locally."""
        ...

    def release_trial(self) -> None:
        """A permitted trial ended unrecorded (ignored, cancelled): give the permit back."""
        ...


class FleetCounts:
    """A breaker's window plus the other breakers' totals: what CLOSED evaluates.

    ``calls``, ``failed`` and ``slow`` add the local window (always current)
    to the others' totals as of the last :meth:`expire` (which also expires
    the local window and asks the link's ``others`` for fresh totals). Once
    the CLOSED period ends the link sets ``live`` to false: the others' part
    stays what it was, so an OPEN breaker shows the counts that tripped it.
    """

    __slots__ = ("_others", "live", "o_calls", "o_failed", "o_slow", "window")

    def __init__(self, window: Window, others: _Others) -> None:
        self.window = window
        self._others = others
        self.live = True
        self.o_calls = self.o_failed = self.o_slow = 0

    @property
    def calls(self) -> int:
        return self.window.calls + self.o_calls

    @property
    def failed(self) -> int:
        return self.window.failed + self.o_failed

    @property
    def slow(self) -> int:
        return self.window.slow + self.o_slow

    def expire(self, now: float) -> None:
        self.window.expire(now)
        if self.live:
            self.o_calls, self.o_failed, self.o_slow = self._others(now)

    def __repr__(self) -> str:
        return f"FleetCounts(calls={self.calls}, failed={self.failed}, slow={self.slow})"


class _Others(Protocol):
    def __call__(self, now: float) -> tuple[int, int, int]: ...
