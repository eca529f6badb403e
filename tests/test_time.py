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
