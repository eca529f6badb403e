"""What anyio's asyncio backend knows of a task's cancel scopes, read directly.

The policies' asyncio fast paths (a bulkhead's waiter, a timeout's loop
timer) bypass anyio's cancel scopes, yet must honour them: a scope around the
call that has been cancelled, or a shielded scope inside it. anyio's public
way to ask goes through a backend lookup costing microseconds, so these read
its task states (private: a ``WeakKeyDictionary`` from task to state, read
through its ``data`` dict; each state's innermost ``cancel_scope``; each
scope's ``_parent_scope``). Any surprise in that shape gives the answer that
leaves anyio's own behaviour in charge, as the docstrings say.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from weakref import ref

import anyio.lowlevel

from ._time import asyncio_loop

__all__ = ["cancel_pending", "deliver_pending_cancel", "innermost_scope", "shield_inside"]

# anyio's asyncio backend, once something has used it (None before: no scope anywhere).
ANYIO_ASYNCIO = "anyio._backends._asyncio"


def _scope_of(task: asyncio.Task[Any] | None) -> Any:
    """The task's innermost anyio cancel scope, ``None`` if it has none; raises on a surprise."""
    backend = sys.modules.get(ANYIO_ASYNCIO)
    if backend is None:
        return None
    # The WeakKeyDictionary's own dict, keyed by weak references: looked up with
    # one directly, without the dictionary's Python-level get().
    states = backend._task_states.data
    if not states:  # no task has anyio state: no scope anywhere
        return None
    state = states.get(ref(task))
    return None if state is None else state.cancel_scope


def cancel_pending(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether an anyio cancel scope around the current task has been cancelled.

    What ``anyio.lowlevel.checkpoint_if_cancelled()`` finds out before it
    yields (its public path costs about 2 µs for a task anyio did not start).
    A surprise answers ``True``: the caller then takes anyio's own checkpoint.
    """
    try:
        scope = _scope_of(asyncio.current_task(loop))
        while scope is not None:
            if scope.cancel_called:
                return True
            if scope.shield:
                return False
            scope = scope._parent_scope
    except Exception:
        return True
    return False


def innermost_scope(task: asyncio.Task[Any]) -> object | None:
    """The task's innermost anyio cancel scope now; ``None`` if it has none (or on a surprise)."""
    try:
        return _scope_of(task)  # type: ignore[no-any-return]
    except Exception:
        return None


def shield_inside(task: asyncio.Task[Any], boundary: object | None) -> bool:
    """Whether a shielded anyio scope that ``task`` entered inside ``boundary`` is active.

    ``boundary`` is what :func:`innermost_scope` gave when the caller began:
    the scopes above it enclose the caller, and their shields do not count.
    A surprise answers ``False`` (the caller cancels, as before it looked).
    """
    scope: Any = innermost_scope(task)
    try:
        while scope is not None and scope is not boundary:
            if scope.shield:
                return True
            scope = scope._parent_scope
    except Exception:
        return False
    return False


async def deliver_pending_cancel() -> None:
    """Raise the cancellation of an enclosing cancel scope cancelled since the last checkpoint.

    A task that was already due to resume (its sleep over, its call failed)
    when a scope around it was cancelled in the same instant learns of it only
    at its next checkpoint: anyio on asyncio does not cancel a task whose wait
    is already done, and trio delivers at checkpoints. A policy about to act
    on an outcome (start another attempt, fall back) calls this first, so the
    caller's cancellation wins and nothing more runs. On asyncio it is a
    lookup unless a scope was cancelled.
    """
    loop = asyncio_loop()
    if loop is None or cancel_pending(loop):
        await anyio.lowlevel.checkpoint_if_cancelled()
