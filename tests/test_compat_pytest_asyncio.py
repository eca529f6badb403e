"""Users' own pytest-asyncio tests (strict mode) run beside anyio's plugin and use policies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilient import Backoff, Fallback, Pipeline, Retry, Timeout, TimeoutExceeded


@pytest.mark.asyncio
async def test_policies_work_under_pytest_asyncio() -> None:
    """A pytest-asyncio test (strict mode) runs a pipeline on its own event loop."""
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise ConnectionError
        return "ok"

    pipeline = Pipeline(Retry("r", attempts=2, backoff=Backoff.constant(0)), Timeout(5))
    assert await pipeline.call(flaky) == "ok"
    assert calls == 2


@pytest.mark.asyncio
async def test_native_asyncio_cancellation_propagates() -> None:
    """A plain asyncio task cancel passes through retry, timeout and fallback unchanged."""
    started = asyncio.Event()
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    pipeline = Pipeline(
        Fallback(lambda exc: "fb", on=lambda e: True),
        Retry("r", attempts=3, retry_on=lambda e: True, backoff=Backoff.constant(0)),
        Timeout(60),
    )
    task = asyncio.ensure_future(pipeline.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


@pytest.mark.asyncio
async def test_timeout_in_virtual_time_under_pytest_asyncio(resilient_clock: Any) -> None:
    """With resilient_clock, a pytest-asyncio test's timeouts and backoffs take no real time."""
    start = resilient_clock.now()
    with pytest.raises(TimeoutExceeded):
        await Timeout(30).call(asyncio.sleep, 3600)
    assert resilient_clock.now() - start == pytest.approx(30)
