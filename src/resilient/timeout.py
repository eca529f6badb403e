"""Timeout: cancel the inner call after ``seconds`` and raise ``TimeoutExceeded``.

The timed-out work is cancelled and awaited before the error is raised, so
nothing it started is left running. Cancellation of the caller wins over the
timeout, also when both happen in the same instant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import ParamSpec, TypeVar, final

import anyio

from ._events import Observer, TimedOut
from ._policy import Policy, _current, enter_context
from ._time import now
from ._validate import check_seconds
from .errors import TimeoutExceeded

__all__ = ["Timeout"]

P = ParamSpec("P")
T = TypeVar("T")


@final
class Timeout(Policy):
    """``Timeout(seconds, name="timeout")``: ``seconds`` finite and > 0.

    Raises :class:`~resilient.TimeoutExceeded` (also a ``TimeoutError``) when
    the inner call runs longer than ``seconds`` on the loop clock.
    """

    kind = "timeout"

    def __init__(
        self, seconds: float, name: str = "timeout", observers: Sequence[Observer] = ()
    ) -> None:
        super().__init__(name, tuple(observers))
        self.seconds = check_seconds(f"Timeout({name!r})", "seconds", seconds)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        deadline = now() + self.seconds
        ctx, token = enter_context(self._label)
        outer_deadline = ctx.deadline
        if outer_deadline is None or deadline < outer_deadline:
            ctx.deadline = deadline
        try:
            with anyio.CancelScope(deadline=deadline):
                return await fn(*args, **kwargs)
            # Reached only when our own deadline cancelled the call (anyio
            # re-raises a cancellation that came from outside this scope).
            if self._listeners:
                self._emit(TimedOut(self.kind, self.name, self.seconds))
            raise TimeoutExceeded(self.seconds, self.name)
        finally:
            ctx.deadline = outer_deadline
            if token is not None:
                _current.reset(token)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds!r}, name={self.name!r})"
