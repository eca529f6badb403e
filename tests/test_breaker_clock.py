"""The clock helpers the breaker reads: always the running loop's own clock, however cached."""

from __future__ import annotations

import asyncio
import threading

import anyio
import pytest

from resilient import _time
from resilient.testing import VirtualTimeEventLoop, current_clock


def run_on(loop: asyncio.AbstractEventLoop, coro_fn: object) -> object:
    try:
        return loop.run_until_complete(coro_fn())  # type: ignore[operator]
    finally:
        loop.close()


def test_loops_in_turn_each_read_their_own_clock() -> None:
    """A virtual loop, a real loop, then another virtual loop: now() follows each one."""

    async def read() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        return _time.now(), _time.clock()(), loop.time()

    for start in (1000.0, None, 5.0):
        loop = asyncio.new_event_loop() if start is None else VirtualTimeEventLoop(start=start)
        now, clocked, expected = run_on(loop, read)  # type: ignore[misc]
        if start is None:
            assert abs(now - expected) < 1.0
            assert abs(clocked - expected) < 1.0
        else:
            assert now == clocked == expected == start


def test_threads_with_loops_of_their_own_never_mix_clocks() -> None:
    """Two threads, each running its own virtual loop, read only their own clock."""
    barrier = threading.Barrier(2)
    errors: list[str] = []

    def worker(start: float) -> None:
        async def main() -> None:
            for _ in range(2000):
                if _time.now() != start or _time.clock()() != start:
                    errors.append(f"loop at {start} read another clock")
                    return
                await asyncio.sleep(0)

        loop = VirtualTimeEventLoop(start=start)
        barrier.wait()
        run_on(loop, main)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (10.0, 20.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.anyio
async def test_now_is_the_loop_clock_on_both_backends() -> None:
    """now() and clock() read what anyio reads, and follow the virtual clock."""
    assert _time.now() == anyio.current_time()
    read = _time.clock()
    current_clock().jump(12.5)
    assert read() == _time.now() == anyio.current_time()


def test_outside_a_loop_now_raises_and_now_or_none_is_none() -> None:
    """With no loop running, now() fails (no clock to read) and now_or_none() is None."""
    with pytest.raises(Exception, match=r"."):
        _time.now()
    assert _time.now_or_none() is None
