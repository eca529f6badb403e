"""Bulkhead: at most ``max_concurrent`` calls at once, the rest wait in line.

``Bulkhead(name, max_concurrent, max_wait=None, max_queue=None)`` keeps one
shared resource (a connection pool, an API quota, a CPU-bound worker) from
being swamped, and keeps a slow dependency from tying up every task.

How it works (one counter, one line of waiters):

- ``_active`` counts the permits held. A call that finds one free takes it
  with a compare and an increment: no allocation, no await, no lock.
- A call that finds none joins the line (a ``deque``) with its own waiter,
  made on the spot, so nothing is bound to an event loop and one bulkhead
  serves several loops one after another. On asyncio the waiter is a bare
  future and ``max_wait`` a loop timer (a long line costs about what it
  costs ``asyncio.Semaphore``); elsewhere (trio) an ``anyio.Event`` waited
  on in a cancel scope. Both read the loop's clock, so virtual time applies.
- Releasing a permit hands it straight to the first waiter (pops it and
  wakes it); the permit never becomes free in between, so a newcomer cannot
  overtake the line. Only with nobody waiting does ``_active`` go down. Hence
  ``waiting > 0`` implies ``active == max_concurrent``, and the fast path's
  one comparison is enough for first-in first-out order.
- A waiter that stops waiting (its ``max_wait`` ran out, or it was
  cancelled) leaves the line. If it was handed a permit in the same instant,
  it keeps the permit (timeout) or passes it on (cancellation): exactly one
  release for every permit, on every path. A cancelled waiter never starts
  its call.

Releasing never runs anyone's code: it only wakes the next waiter, who runs
its own call in its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, TypeVar, final

import anyio

from ._anyio import cancel_pending
from ._events import CallRejected, Observer, PermitAcquired, PermitReleased
from ._policy import Policy
from ._time import asyncio_loop, now
from ._validate import check_int, check_seconds
from .errors import BulkheadFullError, BulkheadReason

__all__ = ["Bulkhead"]

P = ParamSpec("P")
T = TypeVar("T")


@final
class Bulkhead(Policy):
    """``Bulkhead(name, max_concurrent, *, max_wait=None, max_queue=None, observers=())``.

    - ``max_concurrent``: calls running at once, an int >= 1 (required; may be
      given second, positionally).
    - ``max_wait=None``: seconds a call may wait for a permit, >= 0. ``0``
      rejects at once when every permit is taken; ``None`` (or ``inf``) waits
      without limit.
    - ``max_queue=None``: calls that may wait at once, an int >= 0. ``0``
      means no call ever waits; ``None`` means no limit.
    - ``observers=()``: observers of this bulkhead only.

    Waiters are admitted first in, first out. A call that cannot get a permit
    raises :class:`~resilient.BulkheadFullError` with ``reason``
    ``"queue_full"`` (``max_queue`` callers already waiting) or ``"max_wait"``
    (it waited ``max_wait`` seconds, or ``max_wait`` is 0). ``active``,
    ``waiting`` and ``available`` can be read at any time.
    """

    kind = "bulkhead"

    def __init__(
        self,
        name: str,
        max_concurrent: int,
        *,
        max_wait: float | None = None,
        max_queue: int | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(name, observers)
        owner = f"Bulkhead({name!r})"
        self._max_concurrent = check_int(owner, "max_concurrent", max_concurrent, minimum=1)
        self._max_wait = (
            None
            if max_wait is None
            else check_seconds(owner, "max_wait", max_wait, allow_zero=True, allow_inf=True)
        )
        # The limit the wait actually uses: None for "no limit", inf included.
        self._wait_limit = (
            None if self._max_wait is None or math.isinf(self._max_wait) else self._max_wait
        )
        self._max_queue = (
            None if max_queue is None else check_int(owner, "max_queue", max_queue, minimum=0)
        )
        self._active = 0
        # Waiters in arrival order. An event is in here exactly while it is
        # not set: handing over a permit pops it and sets it in one step.
        self._waiters: deque[asyncio.Future[bool] | anyio.Event] = deque()

    @property
    def max_concurrent(self) -> int:
        """Calls that may run at once."""
        return self._max_concurrent

    @property
    def max_wait(self) -> float | None:
        """Seconds a call may wait for a permit; ``None``: no limit."""
        return self._max_wait

    @property
    def max_queue(self) -> int | None:
        """Calls that may wait at once; ``None``: no limit."""
        return self._max_queue

    @property
    def active(self) -> int:
        """Permits held now (calls running, or woken and about to run)."""
        return self._active

    @property
    def waiting(self) -> int:
        """Calls waiting for a permit now."""
        return len(self._waiters)

    @property
    def available(self) -> int:
        """Permits free now."""
        return self._max_concurrent - self._active

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        if self._active < self._max_concurrent:
            # The fast path: a free permit, taken without yielding. No
            # checkpoint here on purpose: the wrapped call has its own, and
            # one loop turn per call would cost more than the whole bulkhead.
            self._active += 1
            waited = 0.0
        elif (loop := asyncio_loop()) is None or self._wait_limit is not None or self._listeners:
            # A wait with a timer (max_wait), or that someone is told the length
            # of (an observer), or on trio: _wait_for_permit.
            waited = await self._wait_for_permit(loop)
        else:
            # The common long line on asyncio: no timer, nobody timing the wait.
            # Wait on the future right here: no coroutine frame, no clock reading.
            waited = 0.0
            if self._max_queue is not None:
                self._check_room()
            waiter = self._line_up(loop)
            try:
                await waiter
                # anyio delivers a scope's cancellation to a task whose future
                # already has its result only at the next checkpoint: take it
                # here, so a cancelled waiter never starts its call.
                if cancel_pending(loop):
                    await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                self._leave_line(waiter)
                raise
        try:
            if self._listeners:
                self._emit(PermitAcquired(self.kind, self.name, waited))
            return await fn(*args, **kwargs)
        finally:
            self._release()

    def _check_room(self) -> None:
        """Reject a call that may not wait: ``max_queue`` calls wait already, or ``max_wait=0``."""
        if self._max_queue is not None and len(self._waiters) >= self._max_queue:
            self._reject("queue_full")
        if self._wait_limit == 0.0:
            self._reject("max_wait")

    def _line_up(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[bool]:
        """Join the line on asyncio: a bare future, appended.

        Its result says how the wait ended: ``True`` a release handed it a
        permit, ``False`` its ``max_wait`` ran out (the timer took it out of
        the line). Cancellation cancels the future, or, if it already has a
        result, is raised at the ``await`` all the same.
        """
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        return waiter

    def _leave_line(self, waiter: asyncio.Future[bool]) -> None:
        """A waiter stopped waiting (cancelled, or its ``max_wait`` ran out) before its call."""
        if not waiter.done() or waiter.cancelled():
            # Still in line, unless a release already skipped it.
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        elif waiter.result():
            # Handed a permit and cancelled in the same instant: pass it
            # on (silently: this call never acquired it).
            self._pass_on()
        # else: timed out, and the timer took it out of the line.

    async def _wait_for_permit(self, loop: asyncio.AbstractEventLoop | None) -> float:
        """Wait in line for a permit; return the seconds waited, or raise ``BulkheadFullError``.

        On asyncio (``loop``) a bare future with ``max_wait`` as a loop timer,
        elsewhere (trio) an ``anyio.Event`` (:meth:`_wait_anyio`).
        """
        self._check_room()
        if loop is None:
            return await self._wait_anyio()
        start = loop.time()
        waiter = self._line_up(loop)
        limit = self._wait_limit
        timer = None if limit is None else loop.call_at(start + limit, self._expire, waiter)
        try:
            granted = await waiter
            if cancel_pending(loop):  # as in call()
                await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            self._leave_line(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not granted:
            self._reject("max_wait")
        return loop.time() - start

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        """``max_wait`` ran out (asyncio timer): leave the line, unless already served."""
        if not waiter.done():
            self._waiters.remove(waiter)
            waiter.set_result(False)

    async def _wait_anyio(self) -> float:
        """Wait on an ``anyio.Event`` within a cancel scope (trio, any other backend)."""
        waiters = self._waiters
        event = anyio.Event()
        waiters.append(event)
        limit = self._wait_limit
        start = now()
        try:
            if limit is None:
                await event.wait()
            else:
                with anyio.move_on_after(limit):
                    await event.wait()
            # A cancellation that arrived after the permit was handed over,
            # but before this task ran again, is delivered here, before the
            # call starts: a cancelled waiter never runs its call.
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            # Cancelled while waiting. A permit handed over in the same
            # instant is passed on to the next waiter, not lost (silently:
            # this call never acquired it, so it emits no PermitReleased).
            if event.is_set():
                self._pass_on()
            else:
                waiters.remove(event)
            raise
        if not event.is_set():
            waiters.remove(event)
            self._reject("max_wait")
        # Set, even if max_wait ran out in the same instant: the permit is ours.
        return now() - start

    def _release(self) -> None:
        """Give a permit back: to the first waiter if there is one, else to the pool."""
        if self._waiters:
            self._pass_on()
        else:
            self._active -= 1
        if self._listeners:
            self._emit(PermitReleased(self.kind, self.name))

    def _pass_on(self) -> None:
        """Hand a permit to the first waiter still waiting, or return it to the pool."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if isinstance(waiter, asyncio.Future):
                # A cancelled future's task is on its way out of the line: skip it.
                if not waiter.done():
                    waiter.set_result(True)
                    return
            else:
                waiter.set()
                return
        self._active -= 1

    def _reject(self, reason: BulkheadReason) -> None:
        if self._listeners:
            self._emit(CallRejected(self.kind, self.name, reason))
        running = f"{self._active} of {self._max_concurrent} permits taken"
        if reason == "queue_full":
            waiting = len(self._waiters)
            detail = f"{running} and {waiting} calls already waiting (max_queue={self._max_queue})"
        elif self._wait_limit == 0.0:
            detail = f"{running} and max_wait=0 does not wait"
        else:
            detail = f"no permit within max_wait={self._max_wait:g}s ({running})"
        raise BulkheadFullError(self.name, reason, detail)

    def __repr__(self) -> str:
        return (
            f"Bulkhead({self.name!r}, {self._max_concurrent}, max_wait={self._max_wait!r}, "
            f"max_queue={self._max_queue!r})"
        )
