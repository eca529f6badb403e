"""Virtual time for both anyio backends.

On trio, ``trio.testing.MockClock(autojump_threshold=0)`` already does it. On
asyncio, :class:`VirtualTimeEventLoop` is a selector event loop whose clock
only moves when the loop would otherwise wait: when no callback is ready and
the selector would block until the next timer, the selector polls I/O once
(or waits at most ``autojump_threshold`` real seconds) and, finding nothing,
jumps the clock to that timer. A retry with a ten-minute backoff then finishes
in microseconds, and the order of events is exactly that of real time.

Like trio's autojump, the clock also jumps while the loop waits for I/O or a
worker thread: code that waits for a real socket next to a pending timer
should raise ``autojump_threshold`` to the real latency it needs.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = [
    "VirtualClock",
    "VirtualTimeEventLoop",
    "current_clock",
    "run",
    "virtual_backend_options",
]

T = TypeVar("T")


class _AutojumpSelector(selectors.DefaultSelector):
    """A selector that turns an idle wait into a jump of the virtual clock."""

    def __init__(self, loop: VirtualTimeEventLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if timeout is None or timeout <= 0:
            return super().select(timeout)
        events = super().select(self._loop.autojump_threshold)
        if not events:
            self._loop.advance(timeout)
        return events


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a virtual clock that jumps whenever every task is idle.

    ``start`` is the clock's first reading; ``autojump_threshold`` the real
    seconds to wait for I/O before jumping (0: jump at once, as trio's
    ``MockClock(autojump_threshold=0)``).
    """

    def __init__(self, *, start: float = 0.0, autojump_threshold: float = 0.0) -> None:
        self._virtual_now = float(start)
        self.autojump_threshold = float(autojump_threshold)
        super().__init__(_AutojumpSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (timers due run on the next turn)."""
        if seconds < 0:
            raise ValueError(f"advance: seconds must be >= 0, got {seconds!r}")
        self._virtual_now += seconds


class VirtualClock:
    """The running loop's virtual clock, whichever backend runs it."""

    def now(self) -> float:
        """The loop clock in seconds."""
        return anyio.current_time()

    async def advance(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds``, running every timer due on the way.

        Equivalent to ``await anyio.sleep(seconds)`` in virtual time: other
        tasks run at the moments their timers fall due.
        """
        if seconds < 0:
            raise ValueError(f"advance: seconds must be >= 0, got {seconds!r}")
        _require_virtual()
        await anyio.sleep(seconds)

    def jump(self, seconds: float) -> None:
        """Move the clock forward at once, without running anything on the way."""
        if seconds < 0:
            raise ValueError(f"jump: seconds must be >= 0, got {seconds!r}")
        loop = _asyncio_virtual_loop()
        if loop is not None:
            loop.advance(seconds)
            return
        trio_clock = _trio_mock_clock()
        if trio_clock is None:
            raise RuntimeError("jump: the running event loop is not on a virtual clock")
        trio_clock.jump(seconds)


def _asyncio_virtual_loop() -> VirtualTimeEventLoop | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if isinstance(loop, VirtualTimeEventLoop) else None


def _trio_mock_clock() -> Any:
    try:
        import trio
        import trio.testing
    except ImportError:  # pragma: no cover - trio is optional
        return None
    try:
        clock = trio.lowlevel.current_clock()
    except RuntimeError:
        return None
    return clock if isinstance(clock, trio.testing.MockClock) else None


def _require_virtual() -> None:
    if _asyncio_virtual_loop() is None and _trio_mock_clock() is None:
        raise RuntimeError(
            "the running event loop is not on a virtual clock: run it with "
            "resilient.testing.run() or the resilient_clock fixture"
        )


def current_clock() -> VirtualClock:
    """The virtual clock of the running loop; raises if the loop runs in real time."""
    _require_virtual()
    return VirtualClock()


def virtual_backend_options(backend: str) -> dict[str, Any]:
    """anyio ``backend_options`` that put ``backend`` ("asyncio" or "trio") in virtual time."""
    if backend == "asyncio":
        return {"loop_factory": VirtualTimeEventLoop}
    if backend == "trio":
        import trio.testing

        return {"clock": trio.testing.MockClock(autojump_threshold=0)}
    raise ValueError(
        f"virtual_backend_options: backend must be 'asyncio' or 'trio', got {backend!r}"
    )


def run(fn: Callable[..., Awaitable[T]], *args: Any, backend: str = "asyncio") -> T:
    """``anyio.run`` in virtual time: ``run(main, backend="trio")``."""
    return anyio.run(fn, *args, backend=backend, backend_options=virtual_backend_options(backend))
