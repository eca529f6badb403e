"""Pipeline: outermost first, nesting, a one-policy pipeline, per-attempt timeouts."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from resilient import (
    Backoff,
    Bulkhead,
    CircuitBreaker,
    Fallback,
    FallbackChain,
    Pipeline,
    Policy,
    Retry,
    Strategy,
    Timeout,
    TimeoutExceeded,
    call_context,
    current_context,
)
from resilient._time import now

pytestmark = pytest.mark.anyio


class Tracer(Policy):
    """A policy that logs entry and exit, to observe nesting order."""

    kind = "tracer"

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(name)
        self.log = log

    async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.log.append(f"enter {self.name}")
        try:
            return await fn(*args, **kwargs)
        finally:
            self.log.append(f"exit {self.name}")


async def test_outermost_first() -> None:
    """Pipeline(a, b, c) runs a(b(c(fn)))."""
    log: list[str] = []

    async def fn(x: int) -> int:
        log.append("fn")
        return x

    p = Pipeline(Tracer("a", log), Tracer("b", log), Tracer("c", log))
    assert await p.call(fn, 3) == 3
    assert log == ["enter a", "enter b", "enter c", "fn", "exit c", "exit b", "exit a"]


async def test_nested_pipelines_flatten_in_order() -> None:
    """A pipeline inside a pipeline behaves as its policies in place."""
    log: list[str] = []

    async def fn() -> None:
        log.append("fn")

    inner = Pipeline(Tracer("b", log), Tracer("c", log))
    outer = Pipeline(Tracer("a", log), inner, Tracer("d", log))
    await outer.call(fn)
    assert log == [
        "enter a", "enter b", "enter c", "enter d", "fn",
        "exit d", "exit c", "exit b", "exit a",
    ]  # fmt: skip
    with call_context() as ctx:
        await outer.call(fn)
    assert ctx.policies == ("tracer:a", "tracer:b", "tracer:c", "tracer:d")


async def test_pipeline_of_one_behaves_as_the_policy() -> None:
    """A pipeline of one retry retries exactly like the retry."""
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError
        return "ok"

    retry = Retry("r", attempts=3, backoff=Backoff.constant(2))
    start = now()
    assert await Pipeline(retry).call(flaky) == "ok"
    assert calls == 3
    assert now() - start == pytest.approx(4)


async def test_timeout_inside_retry_is_per_attempt() -> None:
    """Fallback → Retry → Timeout: each attempt gets its own timeout; then the fallback answers."""
    starts: list[float] = []

    async def hangs() -> str:
        starts.append(now())
        await anyio.sleep(100)
        return "never"

    p = Pipeline(
        Fallback(lambda exc: f"fallback after {type(exc).__name__}"),
        Retry("r", attempts=3, retry_on=(TimeoutExceeded,), backoff=Backoff.constant(1)),
        Timeout(5),
    )
    with call_context() as ctx:
        assert await p.call(hangs) == "fallback after TimeoutExceeded"
    assert starts == pytest.approx([starts[0], starts[0] + 6, starts[0] + 12])
    assert ctx.fallback == "fallback"
    assert ctx.attempt == 3


async def test_chain_in_pipeline_gets_the_call_arguments() -> None:
    """A FallbackChain inside a pipeline calls strategies with the call's own arguments."""

    async def primary(q: str, *, n: int) -> str:
        raise ConnectionError

    p = Pipeline(
        FallbackChain(Strategy("echo", lambda q, n: f"{q}*{n}")),
        Retry("r", attempts=2, backoff=Backoff.constant(0)),
        Timeout(1),
    )
    assert await p.call(primary, "hi", n=2) == "hi*2"


async def test_decorated_pipeline_keeps_signature_and_context_is_cleared() -> None:
    """A decorated pipeline passes arguments through and leaves no context behind."""

    @Pipeline(Retry("r", attempts=2, backoff=Backoff.constant(0)), Timeout(1), name="p")
    async def double(x: int) -> int:
        ctx = current_context()
        assert ctx is not None
        assert ctx.policies == ("retry:r", "timeout:timeout")
        return 2 * x

    assert double.__name__ == "double"
    assert await double(4) == 8
    assert current_context() is None


@pytest.mark.parametrize("decorated", [False, True])
async def test_concurrent_calls_each_get_their_own_context(decorated: bool) -> None:
    """Calls through one pipeline at once each see a context of their own, listing its policies."""
    p = Pipeline(CircuitBreaker("b"), Bulkhead("k", 10), Fallback(lambda exc: "fb"), name="p")
    contexts: list[Any] = []

    async def fn(n: int) -> int:
        ctx = current_context()
        assert ctx is not None
        assert ctx.policies == ("circuit_breaker:b", "bulkhead:k", "fallback:fallback")
        assert ctx.attempt == 0
        assert ctx.fallback is None  # another call's write does not show
        ctx.fallback = f"call {n}"
        contexts.append(ctx)
        await anyio.sleep(1)
        assert current_context() is ctx
        assert ctx.fallback == f"call {n}"
        return n

    async with anyio.create_task_group() as tg:
        for n in range(3):
            if decorated:
                tg.start_soon(p(fn), n)
            else:
                tg.start_soon(p.call, fn, n)
    assert len({id(ctx) for ctx in contexts}) == 3
    assert current_context() is None
    with call_context() as outer:
        assert await p.call(lambda: fn(9)) == 9
    assert outer is contexts[-1]


def test_repr_shows_the_order() -> None:
    """Printing a pipeline shows its policies outermost first."""
    p = Pipeline(Fallback(lambda e: 1), Retry("net"), Timeout(3.0), name="ask")
    assert repr(p) == (
        "Pipeline(Fallback('fallback') → Retry('net') → Timeout(3.0, name='timeout'), name='ask')"
    )


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Pipeline(), "policies"),
        (lambda: Pipeline(lambda: 1), "policies"),  # type: ignore[arg-type]
        (lambda: Pipeline(Timeout(1), name=""), "name"),
    ],
)
def test_bad_configuration(build: Any, match: str) -> None:
    """Invalid pipelines raise ValueError."""
    with pytest.raises(ValueError, match=match):
        build()
