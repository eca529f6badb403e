"""Timeout: cancel the inner call after ``seconds`` and raise ``TimeoutExceeded``.

The timed-out work is cancelled and awaited before the error is raised, so
nothing it started is left running. Cancellation of the caller wins over the
timeout, also when both happen in the same instant.

Two ways to the same behaviour:

- On asyncio, natively, as ``asyncio.timeout`` does it but without its
  context-manager objects: one loop timer that cancels the task
  (``task.cancel()``), and on the way out ``task.uncancel()`` to take that
  request back. A task still being cancelled after that (its
  ``cancelling()`` count above what it was on entry) has a caller cancelling
  it too, and the caller wins: the ``CancelledError`` propagates. The same
  goes for an enclosing anyio cancel scope that is cancelled or whose
  deadline has come: the timeout steps aside for one checkpoint, where anyio
  delivers its own cancellation. Cancel scopes inside the call see a plain
  native cancellation, which they never swallow; a shielded one holds it off
  until the call has left it, as it would an anyio scope's. The timer checks
  the clock when it runs (uvloop runs timers on whole milliseconds, early).
  This costs less than ``asyncio.timeout`` (and about a third of an anyio
  ``CancelScope``).
- On trio, a trio ``CancelScope`` with the deadline (what an anyio scope
  is there, without anyio's wrapper); anywhere else, an anyio one.
"""

from __future__ import annotations

import sys
from asyncio import AbstractEventLoop, CancelledError, Task, TimerHandle, current_task
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any, ParamSpec, TypeVar, final

import anyio
import anyio.lowlevel

from ._anyio import innermost_scope, shield_inside
from ._events import Observer, TimedOut
from ._policy import Policy, enter_context, label_of, reset_context
from ._time import asyncio_loop, now
from ._validate import check_seconds
from .errors import TimeoutExceeded

__all__ = ["Timeout"]

P = ParamSpec("P")
T = TypeVar("T")


# How often a timeout that is due looks again while a shielded scope inside
# the call holds it off (anyio would deliver at the shield's exit; nothing
# tells us when that is).
_SHIELD_POLL = 0.005


class _Expiry:
    """One call's loop timer (``timer``): at the deadline, cancel the task; remember it did."""

    __slots__ = ("boundary", "deadline", "fired", "loop", "task", "timer")

    def __init__(self, loop: AbstractEventLoop, task: Task[Any], deadline: float) -> None:
        self.loop = loop
        self.task = task
        self.deadline = deadline
        self.fired = False
        # The anyio scopes the call enters from here on are inside this timeout.
        self.boundary = innermost_scope(task)
        self.timer: TimerHandle = loop.call_at(deadline, self)

    def __call__(self) -> None:
        loop = self.loop
        if loop.time() < self.deadline:
            # Early: uvloop runs timers on whole milliseconds. Not due yet.
            self.timer = loop.call_at(self.deadline, self)
        elif shield_inside(self.task, self.boundary):
            # Shielded code inside the call (a cleanup, say) must finish, as
            # under an anyio scope: cancel once it has left the shield.
            self.timer = loop.call_at(loop.time() + _SHIELD_POLL, self)
        else:
            self.fired = True
            self.task.cancel()


def _scope(loop: object, deadline: float) -> ContextManager[object]:
    """A cancel scope with ``deadline``: trio's own under trio, else anyio's.

    On trio an anyio scope is a wrapper around a trio scope, with the same
    behaviour; using trio's directly saves the wrapper (about 2 µs a call).
    """
    trio = sys.modules.get("trio") if loop is None else None
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:  # trio is imported but not running here
            pass
        else:
            return trio.CancelScope(deadline=deadline)  # type: ignore[no-any-return]
    return anyio.CancelScope(deadline=deadline)


@final
class Timeout(Policy):
    """``Timeout(seconds, *, name="timeout", observers=())``: ``seconds`` finite and > 0.

    Raises :class:`~resilient.TimeoutExceeded` (also a ``TimeoutError``) when
    the inner call runs longer than ``seconds`` on the loop clock.
    """

    kind = "timeout"

    def __init__(
        self, seconds: float, *, name: str = "timeout", observers: Sequence[Observer] = ()
    ) -> None:
        super().__init__(name, observers)
        self.seconds = check_seconds(f"Timeout({name!r})", "seconds", seconds)
        self._label = label_of(self)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        deadline = now() + self.seconds
        ctx, token = enter_context(self._label)
        outer_deadline = ctx.deadline
        if outer_deadline is None or deadline < outer_deadline:
            ctx.deadline = deadline
        try:
            loop = asyncio_loop()
            task = None if loop is None else current_task(loop)
            if task is None:  # trio (or a coroutine driven outside any task)
                with _scope(loop, deadline):
                    return await fn(*args, **kwargs)
                # Reached only when our own deadline cancelled the call (a
                # cancellation that came from outside the scope propagates).
            else:
                cancelling = task.cancelling()
                expiry = _Expiry(loop, task, deadline)  # type: ignore[arg-type]
                try:
                    return await fn(*args, **kwargs)
                except CancelledError:
                    if not expiry.fired:
                        raise  # not ours
                    expiry.fired = False  # uncancelled here, not again below
                    task.uncancel()
                    if task.cancelling() > cancelling:
                        raise  # a caller cancelled too: the caller wins
                    if anyio.current_effective_deadline() <= now():
                        # An enclosing anyio scope is cancelled (or due) too:
                        # it wins. anyio delivers its own cancellation, which
                        # its scope recognises, at this checkpoint.
                        await anyio.lowlevel.checkpoint()
                finally:
                    expiry.timer.cancel()
                    if expiry.fired:
                        # The call swallowed our cancellation (or turned it
                        # into another error): take the request back all the same.
                        task.uncancel()
            if self._listeners:
                self._emit(TimedOut(self.kind, self.name, self.seconds))
            raise TimeoutExceeded(self.seconds, self.name)
        finally:
            ctx.deadline = outer_deadline
            if token is not None:
                reset_context(token)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds!r}, name={self.name!r})"
