"""Type-checked by mypy, never run: decorated functions keep their signatures."""

from __future__ import annotations

from typing import assert_type

from resilient import Backoff, Fallback, Pipeline, Retry, Timeout

retry = Retry("typing", attempts=2, backoff=Backoff.constant(0.0))


@retry
async def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


@Pipeline(Fallback(lambda exc: 0), retry, Timeout(1.0))
async def count(items: list[int]) -> int:
    return len(items)


async def use() -> None:
    assert_type(await fetch("x", timeout=2.0), bytes)
    assert_type(await count([1, 2]), int)
    assert_type(await retry.call(fetch, "y"), bytes)
    await fetch(1)  # type: ignore[arg-type]
    await fetch("x", timeout="slow")  # type: ignore[arg-type]
    await count()  # type: ignore[call-arg]
