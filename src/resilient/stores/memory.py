"""``MemoryStore``: breakers of one process sharing one state, immediately.

Every operation is a few Python statements on a shared record, with no await,
so it works on both anyio backends and in virtual time; it follows the same
rules as the Redis store (see :mod:`resilient.stores._base`) with no delay and
no failure mode: ``degraded`` is always false.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, final

from .._time import now as _now
from ..breaker import CircuitState
from ._base import FleetCounts, How, SharedView

if TYPE_CHECKING:
    from .._window import Window
    from ..breaker import CircuitBreaker

__all__ = ["MemoryStore"]

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN


class _Record:
    """One shared breaker state: the fleet's state, its trials, and its members."""

    __slots__ = ("duration", "gen", "links", "state", "taken", "tc", "tf", "ts", "until")

    def __init__(self) -> None:
        self.gen = 1
        self.state = CLOSED
        self.until = 0.0  # OPEN: end of the period, on the loop clock
        self.duration = 0.0  # open duration of the current or last OPEN period
        self.taken = self.tc = self.tf = self.ts = 0  # HALF_OPEN: permits, trials recorded
        # The members, weakly (a breaker owns its link); a plain list iterates fastest.
        self.links: list[weakref.ref[_MemoryLink]] = []

    def move(self, state: CircuitState, until: float = 0.0, duration: float | None = None) -> None:
        """A shared transition: a new generation."""
        self.gen += 1
        self.state = state
        self.until = until
        if duration is not None:
            self.duration = duration
        self.taken = self.tc = self.tf = self.ts = 0


@final
class MemoryStore:
    """Breakers of the same name share one state in this process.

    No options. Breakers on one store must run on one event loop (their
    times are that loop's clock). State lives as long as the store.
    """

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}

    def attach(self, breaker: CircuitBreaker, name: str) -> _MemoryLink:
        """The link of ``breaker`` to the shared state named ``name``."""
        record = self._records.get(name)
        if record is None:
            record = self._records[name] = _Record()
        link = _MemoryLink(record, breaker)
        record.links = [ref for ref in record.links if ref() is not None]
        record.links.append(weakref.ref(link))
        return link

    def __repr__(self) -> str:
        return f"MemoryStore({sorted(self._records)!r})"


@final
class _MemoryLink:
    """One breaker's end of a :class:`_Record` (see ``BreakerLink``)."""

    __slots__ = (
        "__weakref__",
        "_breaker",
        "_fleet",
        "gen",
        "kind",
        "record",
        "trial_gen",
        "window",
    )
    degraded = False

    def __init__(self, record: _Record, breaker: CircuitBreaker) -> None:
        self.record = record
        self._breaker = weakref.ref(breaker)
        # A newcomer to a CLOSED fleet follows it as it is; else it adopts at its first look.
        self.gen = record.gen if record.state is CLOSED else 0
        self.kind = CLOSED
        self.window: Window | None = None
        self._fleet: FleetCounts | None = None  # the current CLOSED period's counts
        self.trial_gen = 0  # the HALF_OPEN generation of this breaker's permits

    def pull(self) -> SharedView | None:
        r = self.record
        if r.gen == self.gen:
            return None
        self.gen = r.gen
        return SharedView(r.gen, r.state, r.until, r.duration)

    def counts(self, window: Window) -> FleetCounts:
        self.window = window
        self._fleet = fleet = FleetCounts(window, self._others)
        return fleet

    def _others(self, now: float) -> tuple[int, int, int]:
        """The other members' window totals in the current generation."""
        r = self.record
        calls = failed = slow = 0
        for ref in r.links:
            link = ref()
            if link is None or link is self:
                continue
            window = link.window
            if link.gen == r.gen and link.kind is CLOSED and window:
                window.expire(now)
                calls += window.calls
                failed += window.failed
                slow += window.slow
        return calls, failed, slow

    def on_state(self, kind: CircuitState, until: float, duration: float, how: How) -> None:
        self.kind = kind
        if kind is not CLOSED and self._fleet is not None:
            self._fleet.live = False  # keep showing the counts that ended the period
        if how == "adopted" or kind is HALF_OPEN:
            return  # the fleet's HALF_OPEN starts with its first permit
        r = self.record
        if how == "manual":
            r.move(kind, until, duration)
        elif r.gen == self.gen or (r.state is CLOSED and (self.gen == 0 or kind is OPEN)):
            if kind is CLOSED and r.state is CLOSED:
                self.gen = r.gen  # already CLOSED: nothing to share
                return
            r.move(kind, until, duration if kind is OPEN else None)
        else:
            return  # the fleet moved on: its state wins (adopted at the next look)
        self.gen = r.gen

    async def acquire_trial(self) -> bool | None:
        r = self.record
        b = self._breaker()
        if b is None:
            return False
        if r.state is OPEN and r.gen == self.gen:
            r.move(HALF_OPEN)  # this breaker's open period is over: the fleet's trials begin
        if r.state is HALF_OPEN and r.taken < b.half_open_max_calls:
            r.taken += 1
            self.gen = self.trial_gen = r.gen
            return True
        return False

    def trial_done(self, failed: bool, slow: bool) -> bool:
        r = self.record
        b = self._breaker()
        if b is None or r.gen != self.trial_gen or r.state is not HALF_OPEN:
            return True  # stale: the fleet has moved on, this outcome changes nothing
        r.tc += 1
        r.tf += failed
        r.ts += slow
        n = r.tc
        if n >= b.half_open_max_calls:
            if r.tf / n >= b.failure_rate_threshold or r.ts / n >= b.slow_call_rate_threshold:
                duration = b._backed_off(r.duration)
                r.move(OPEN, _now() + duration, duration)
            else:
                r.move(CLOSED, 0.0, 0.0)
        return True

    def release_trial(self) -> None:
        r = self.record
        if r.gen == self.trial_gen and r.state is HALF_OPEN and r.taken > 0:
            r.taken -= 1
