"""Type-checked by mypy, never run: decorated functions keep their signatures."""

from __future__ import annotations

from typing import assert_type

from resilient import (
    Backoff,
    Bulkhead,
    CircuitBreaker,
    Fallback,
    FallbackChain,
    Pipeline,
    Retry,
    Strategy,
    Timeout,
)

retry = Retry("typing", attempts=2, backoff=Backoff.constant(0.0))


@retry
async def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


@Pipeline(Fallback(lambda exc: 0), retry, Timeout(1.0))
async def count(items: list[int]) -> int:
    return len(items)


breaker = CircuitBreaker("typing-breaker")
bulkhead = Bulkhead("typing-pool", 10)


@breaker
async def lookup(key: str, default: int | None = None) -> int | None:
    return default


@bulkhead
async def render(template: str, **values: str) -> str:
    return template


@FallbackChain(Strategy("zero", lambda x: 0.0))
async def ratio(x: float) -> float:
    return x


class Client:
    @breaker
    async def get(self, path: str) -> bytes:
        return path.encode()


async def use() -> None:
    assert_type(await fetch("x", timeout=2.0), bytes)
    assert_type(await count([1, 2]), int)
    assert_type(await retry.call(fetch, "y"), bytes)
    assert_type(await lookup("k"), int | None)
    assert_type(await render("t", a="b"), str)
    assert_type(await ratio(1.0), float)
    assert_type(await Client().get("/"), bytes)
    assert_type(await breaker.call(fetch, "z", timeout=1.0), bytes)
    assert_type(await bulkhead.call(count, [1]), int)
    await lookup(1)  # type: ignore[arg-type]
    await render("t", a=1)  # type: ignore[arg-type]
    await Client().get(b"/")  # type: ignore[arg-type]
    await fetch(1)  # type: ignore[arg-type]
    await fetch("x", timeout="slow")  # type: ignore[arg-type]
    await count()  # type: ignore[call-arg]
