"""Virtual time: policies and user code follow the loop clock on both backends."""

from __future__ import annotations

import time

import anyio
import pytest

from resilient import _time
from resilient.testing import VirtualTimeEventLoop, current_clock, run

pytestmark = pytest.mark.anyio


async def test_long_sleep_takes_no_real_time() -> None:
    """A ten-minute sleep completes at once in real time and exactly in virtual time."""
    real = time.perf_counter()
    start = _time.now()
    await anyio.sleep(600)
    assert _time.now() - start == pytest.approx(600)
    assert time.perf_counter() - real < 1.0


async def test_now_is_the_loop_clock() -> None:
    """``_time.now`` reads the same clock as anyio."""
    assert _time.now() == anyio.current_time()


async def test_concurrent_sleepers_wake_in_virtual_order() -> None:
    """Timers fire in the order of their deadlines, each at its own virtual time."""
    woke: list[tuple[int, float]] = []
    start = _time.now()

    async def sleeper(n: int) -> None:
        await anyio.sleep(n)
        woke.append((n, _time.now() - start))

    async with anyio.create_task_group() as tg:
        for n in (3, 1, 2):
            tg.start_soon(sleeper, n)
    assert [n for n, _ in woke] == [1, 2, 3]
    assert [t for _, t in woke] == pytest.approx([1.0, 2.0, 3.0])


async def test_clock_advance_and_jump() -> None:
    """``advance`` runs timers on the way; ``jump`` moves the clock at once."""
    clock = current_clock()
    start = clock.now()
    await clock.advance(5)
    assert clock.now() - start == pytest.approx(5)
    clock.jump(10)
    assert clock.now() - start == pytest.approx(15)
    with pytest.raises(ValueError, match="seconds"):
        clock.jump(-1)


def test_run_helper_on_both_backends() -> None:
    """``resilient.testing.run`` runs a coroutine function in virtual time."""

    async def main() -> float:
        start = anyio.current_time()
        await anyio.sleep(3600)
        return anyio.current_time() - start

    assert run(main, backend="asyncio") == pytest.approx(3600)
    assert run(main, backend="trio") == pytest.approx(3600)


def test_virtual_loop_jump_rejects_negative() -> None:
    """The asyncio virtual loop refuses to move backwards."""
    loop = VirtualTimeEventLoop(start=5.0)
    try:
        assert loop.time() == 5.0
        with pytest.raises(ValueError, match="-1"):
            loop.advance(-1)
    finally:
        loop.close()


def test_current_clock_outside_virtual_time_is_an_error() -> None:
    """Asking for the virtual clock on a real-time loop says what to do."""

    async def main() -> None:
        current_clock()

    with pytest.raises(RuntimeError, match="virtual clock"):
        anyio.run(main)


# -- finding the clock: the loop running now, whatever ran before or runs elsewhere --------


def _reads_its_loop() -> bool:
    """Whether ``_time.now()`` reads the running asyncio loop's own clock.

    The loop's ``time()`` read just before and just after brackets it (a real
    clock moves between readings: uvloop's ticks in milliseconds).
    """
    import asyncio

    own = asyncio.get_running_loop().time
    before = own()
    reading = _time.now()
    return before <= reading <= own()


def test_now_follows_each_asyncio_loop_in_turn() -> None:
    """Virtual loops started one after another, at different clocks, each read as their own."""
    import asyncio

    async def main() -> tuple[float, bool]:
        return _time.now(), _time.asyncio_loop() is asyncio.get_running_loop()

    for start in (100.0, 5.0, 7_000.0):
        loop = VirtualTimeEventLoop(start=start)
        try:
            assert loop.run_until_complete(main()) == (start, True)
        finally:
            loop.close()


def test_now_on_uvloop_between_other_loops() -> None:
    """A uvloop loop (not a BaseEventLoop) reads its own clock, before and after others."""
    uvloop = pytest.importorskip("uvloop")
    import asyncio

    async def on_uvloop() -> tuple[list[bool], bool]:
        readings = [_reads_its_loop() for _ in range(3)]  # the remembered clock, too
        return readings, _time.asyncio_loop() is asyncio.get_running_loop()

    async def on_virtual() -> float:
        return _time.now()

    for _ in range(2):
        assert uvloop.run(on_uvloop()) == ([True, True, True], True)
        virtual = VirtualTimeEventLoop(start=42.0)
        try:
            assert virtual.run_until_complete(on_virtual()) == 42.0
        finally:
            virtual.close()


def test_now_follows_each_trio_run_and_its_clock() -> None:
    """Each ``trio.run`` with its own clock is read through that clock, not a remembered one."""
    trio = pytest.importorskip("trio")

    async def main() -> tuple[float, float]:
        return _time.now(), trio.current_time()

    for start in (10.0, 3_000.0):
        clock = trio.testing.MockClock(rate=0)
        clock.jump(start)
        first = trio.run(main, clock=clock)
        second = trio.run(main, clock=clock)
        assert first == second == (clock.current_time(), clock.current_time())
    fresh = trio.testing.MockClock(rate=0)
    assert trio.run(main, clock=fresh) == (0.0, 0.0)


def test_now_in_threads_running_different_loops_at_once() -> None:
    """Loops running at the same time in two threads each read their own clock."""
    import asyncio
    import threading

    errors: list[str] = []
    barrier = threading.Barrier(2)

    async def check(name: str) -> None:
        barrier.wait()  # both loops run before either reads
        for i in range(2_000):
            if not _reads_its_loop():
                errors.append(f"{name}: now() read another clock at {i}")
            if i % 100 == 0:
                await asyncio.sleep(0)

    def virtual(start: float) -> None:
        loop = VirtualTimeEventLoop(start=start)
        try:
            loop.run_until_complete(check(f"virtual {start}"))
        finally:
            loop.close()

    def other() -> None:
        try:
            import uvloop

            uvloop.run(check("uvloop"))
        except ImportError:
            virtual(2_000.0)

    threads = [threading.Thread(target=virtual, args=(1_000.0,)), threading.Thread(target=other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
