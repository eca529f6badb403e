"""The one place that reads the clock (and finds the loop whose clock it is).

All policies measure time on the running event loop's clock, so a virtual
clock for the loop (trio's ``MockClock``, or ``resilient.testing``'s
``VirtualTimeEventLoop`` on asyncio) puts every policy in virtual time.
"""

from __future__ import annotations

import sys
import threading
import time
from asyncio import (
    AbstractEventLoop,
    BaseEventLoop,
    _get_running_loop,  # returns None instead of raising
)
from collections.abc import Callable

import anyio

__all__ = ["asyncio_loop", "clock", "now"]

# BaseEventLoop.time() is ``return time.monotonic()``: for a loop that keeps
# it, calling time.monotonic directly reads the very same clock, one Python
# frame cheaper. Loops that override time() (virtual clocks, uvloop) are
# called through their own method.
_BASE_TIME = BaseEventLoop.time
_monotonic = time.monotonic
_get_ident = threading.get_ident

# Finding the running loop is the costly part of reading its clock: on
# Python 3.11 asyncio's _get_running_loop() makes a getpid() system call,
# about as costly as the rest of a breaker's bookkeeping. So the last asyncio
# loop found is remembered with its clock, as one tuple (read atomically, so
# threads running loops of their own never mix one's loop with another's
# clock). It is still the running loop exactly when its _thread_id is this
# thread's: a BaseEventLoop sets that attribute when it starts running and
# clears it when it stops, and a thread runs at most one loop at a time. The
# remembered loop stays referenced until another one replaces it.
_last: tuple[BaseEventLoop | None, Callable[[], float]] = (None, _monotonic)


def now() -> float:
    """The running loop's clock in seconds (asyncio fast path, else trio, else anyio)."""
    loop, read = _last
    if loop is not None and loop._thread_id == _get_ident():  # type: ignore[attr-defined]
        return read()
    return _find_clock()()


def clock() -> Callable[[], float]:
    """The running loop's clock as a function, to read it more than once per lookup.

    A call that needs the time at its start and at its end looks the clock up
    once. The function stays valid while the same loop runs, e.g. for the
    duration of one call.
    """
    loop, read = _last
    if loop is not None and loop._thread_id == _get_ident():  # type: ignore[attr-defined]
        return read
    return _find_clock()


def asyncio_loop() -> AbstractEventLoop | None:
    """The running asyncio loop (remembered as for :func:`now`), or ``None`` (trio, no loop)."""
    loop = _last[0]
    if loop is not None and loop._thread_id == _get_ident():  # type: ignore[attr-defined]
        return loop
    thread, still, _, other = _elsewhere
    if other is not None and thread == _get_ident() and still():
        return other
    return _get_running_loop()


def _never() -> bool:
    return False


# The last clock found that _last cannot hold: an asyncio loop that is not a
# BaseEventLoop (uvloop's has no _thread_id), or trio's. As (thread, still,
# read, loop): it is the clock of the code running now while this is that
# thread and still() holds: the loop is running (a thread runs at most one
# loop at a time), or trio's current clock is the same object (trio's run
# state is per thread). This spares such loops asyncio's _get_running_loop()
# and its getpid() on every reading, most of what reading their clock cost.
# (One case it cannot tell apart: a non-BaseEventLoop loop found running in
# this thread that has since moved to another thread while this thread runs
# another such loop, unseen in between; uvloop loops read one monotonic clock,
# so the reading is off by the loops' cached milliseconds at most.)
_elsewhere: tuple[int, Callable[[], bool], Callable[[], float], AbstractEventLoop | None] = (
    -1,
    _never,
    _monotonic,
    None,
)


def _find_clock() -> Callable[[], float]:
    global _last, _elsewhere
    thread, still, read, _ = _elsewhere
    if thread == _get_ident() and still():
        return read
    loop = _get_running_loop()
    if loop is None:
        return _other_clock()
    read = _monotonic if type(loop).time is _BASE_TIME else loop.time
    if isinstance(loop, BaseEventLoop):  # has _thread_id, with the meaning above
        _last = (loop, read)
    else:
        _elsewhere = (_get_ident(), loop.is_running, read, loop)
    return read


def _other_clock() -> Callable[[], float]:
    global _elsewhere
    trio = sys.modules.get("trio")
    if trio is not None:
        current = trio.lowlevel.current_clock
        try:
            # What anyio's trio backend reads, without the backend lookup.
            found = current()
        except RuntimeError:  # not inside trio.run
            pass
        else:

            def still() -> bool:
                try:
                    return current() is found
                except RuntimeError:  # this thread's trio.run has ended
                    return False

            read: Callable[[], float] = found.current_time
            _elsewhere = (_get_ident(), still, read, None)
            return read
    return anyio.current_time


def now_or_none() -> float | None:
    """The loop clock, or ``None`` outside a running event loop."""
    loop = _get_running_loop()
    if loop is not None:
        return loop.time()
    try:
        return anyio.current_time()
    except Exception:  # no async library running here
        return None
