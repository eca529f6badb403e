"""The one place that reads the clock.

All policies measure time on the running event loop's clock, so a virtual
clock for the loop (trio's ``MockClock``, or ``resilient.testing``'s
``VirtualTimeEventLoop`` on asyncio) puts every policy in virtual time.
"""

from __future__ import annotations

from asyncio import _get_running_loop  # C-fast; returns None instead of raising

import anyio

__all__ = ["now"]


def now() -> float:
    """The running loop's clock in seconds (asyncio fast path, else anyio)."""
    loop = _get_running_loop()
    if loop is not None:
        return loop.time()
    return anyio.current_time()


def now_or_none() -> float | None:
    """The loop clock, or ``None`` outside a running event loop."""
    loop = _get_running_loop()
    if loop is not None:
        return loop.time()
    try:
        return anyio.current_time()
    except Exception:  # no async library running here
        return None
