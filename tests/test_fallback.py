"""Fallback and FallbackChain: order, can_handle skipping, error groups, sync/async handlers."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import (
    Event,
    Fallback,
    FallbackChain,
    FallbackChainFailed,
    FallbackUsed,
    ResilienceError,
    Retry,
    Strategy,
    call_context,
    current_context,
)

pytestmark = pytest.mark.anyio


async def fails(*args: Any, **kwargs: Any) -> str:
    raise ConnectionError("primary down")


async def test_fallback_returns_handler_value_on_matching_error() -> None:
    """A matching error is replaced by the (sync) handler's value."""
    fb = Fallback(lambda exc: f"fallback for {type(exc).__name__}")
    assert await fb.call(fails) == "fallback for ConnectionError"


async def test_fallback_async_handler() -> None:
    """An async handler is awaited."""

    async def handler(exc: Exception) -> str:
        await anyio.sleep(1)
        return "async"

    assert await Fallback(handler).call(fails) == "async"


async def test_fallback_ignores_non_matching_errors() -> None:
    """An error outside ``on`` propagates."""
    fb = Fallback(lambda exc: "x", on=(KeyError,))
    with pytest.raises(ConnectionError):
        await fb.call(fails)
    fb2 = Fallback(lambda exc: "x", on=lambda e: isinstance(e, KeyError))
    with pytest.raises(ConnectionError):
        await fb2.call(fails)


async def test_fallback_handler_error_propagates_as_is() -> None:
    """An error raised by the handler propagates unchanged."""

    def handler(exc: Exception) -> str:
        raise RuntimeError("handler broke")

    with pytest.raises(RuntimeError, match="handler broke"):
        await Fallback(handler).call(fails)


async def test_cancellation_never_triggers_a_fallback() -> None:
    """A cancelled call is not replaced by the fallback."""
    used = []
    fb = Fallback(lambda exc: used.append(exc) or "x", on=lambda e: True)
    with anyio.move_on_after(1) as scope:
        await fb.call(anyio.sleep, 10)
    assert scope.cancelled_caught
    assert used == []


async def test_fallback_is_visible_in_context_and_events() -> None:
    """Which fallback answered shows in the call context and a FallbackUsed event."""
    events: list[Event] = []
    fb = Fallback(lambda exc: "x", name="static", observers=[events.append])
    with call_context() as ctx:
        await fb.call(fails)
    assert ctx.fallback == "static"
    assert events == [FallbackUsed("fallback", "static", "static", "ConnectionError")]


@pytest.mark.parametrize("decorated", [False, True])
@pytest.mark.parametrize("chain", [False, True])
async def test_fallbacks_join_the_open_context_and_open_none(decorated: bool, chain: bool) -> None:
    """Fallback and FallbackChain join an open context (label, answer) but open none themselves."""
    seen: list[Any] = []

    async def look() -> str:
        ctx = current_context()
        seen.append(None if ctx is None else ctx.policies)
        raise ConnectionError

    policy: Fallback | FallbackChain
    if chain:
        policy = FallbackChain(Strategy("s", lambda: "x"), name="c")
        label, answered = "fallback_chain:c", "s"
    else:
        policy = Fallback(lambda exc: "x", name="f")
        label, answered = "fallback:f", "f"

    async def run(fn: Any) -> Any:
        return await (policy(fn)() if decorated else policy.call(fn))

    assert await run(look) == "x"
    with call_context() as ctx:
        assert await run(look) == "x"
    assert await run(Retry("r", attempts=1)(look)) == "x"
    assert seen == [None, (label,), ("retry:r",)]
    assert ctx.policies == (label,)
    assert ctx.fallback == answered
    assert current_context() is None


def calls_log() -> tuple[list[str], Any]:
    log: list[str] = []

    def make(name: str, *, ok: bool, is_async: bool = True) -> Any:
        if is_async:

            async def afn(*args: Any, **kwargs: Any) -> str:
                log.append(name)
                if not ok:
                    raise ValueError(name)
                return f"{name}:{args}:{kwargs}"

            return afn

        def sfn(*args: Any, **kwargs: Any) -> str:
            log.append(name)
            if not ok:
                raise ValueError(name)
            return f"{name}:{args}:{kwargs}"

        return sfn

    return log, make


async def test_chain_tries_strategies_in_order_with_the_call_arguments() -> None:
    """The wrapped function first, then each strategy in order, each with the call's arguments."""
    log, make = calls_log()
    chain = FallbackChain(
        Strategy("a", make("a", ok=False)),
        Strategy("b", make("b", ok=True, is_async=False)),
        Strategy("c", make("c", ok=True)),
    )
    with call_context() as ctx:
        result = await chain.call(make("primary", ok=False), 1, k=2)
    assert result == "b:(1,):{'k': 2}"
    assert log == ["primary", "a", "b"]
    assert ctx.fallback == "b"


async def test_chain_primary_success_uses_no_strategy() -> None:
    """When the wrapped function succeeds, no strategy runs."""
    log, make = calls_log()
    chain = FallbackChain(Strategy("a", make("a", ok=True)))
    with call_context() as ctx:
        assert await chain.call(make("primary", ok=True)) == "primary:():{}"
    assert log == ["primary"]
    assert ctx.fallback is None


async def test_chain_skips_by_can_handle_on_the_last_error() -> None:
    """A strategy whose can_handle rejects the last error is skipped."""
    log, make = calls_log()
    seen: list[Exception] = []

    def only_value_errors_named_a(exc: Exception) -> bool:
        seen.append(exc)
        return str(exc) == "a"

    chain = FallbackChain(
        Strategy("a", make("a", ok=False)),
        Strategy("b", make("b", ok=True), can_handle=lambda e: isinstance(e, KeyError)),
        Strategy("c", make("c", ok=True), can_handle=only_value_errors_named_a),
    )
    assert (await chain.call(make("primary", ok=False))).startswith("c:")
    assert log == ["primary", "a", "c"]
    assert [str(e) for e in seen] == ["a"]


async def test_chain_failure_groups_every_error_in_order() -> None:
    """All failed or skipped: FallbackChainFailed holds each error, the wrapped function's first."""
    log, make = calls_log()
    chain = FallbackChain(
        Strategy("a", make("a", ok=False)),
        Strategy("skip", make("skip", ok=True), can_handle=lambda e: False),
        Strategy("c", make("c", ok=False)),
        name="llm",
    )
    with pytest.raises(FallbackChainFailed) as info:
        await chain.call(make("primary", ok=False))
    group = info.value
    assert isinstance(group, ExceptionGroup)
    assert isinstance(group, ResilienceError)
    assert group.name == "llm"
    assert [str(e) for e in group.exceptions] == ["primary", "a", "c"]
    assert log == ["primary", "a", "c"]


@given(outcomes=st.lists(st.sampled_from(["ok", "fail", "skip"]), min_size=1, max_size=6))
async def test_chain_first_success_wins(outcomes: list[str]) -> None:
    """For any mix of strategies, the first non-skipped success answers; else all errors group."""
    log, make = calls_log()
    strategies = [
        Strategy(
            f"s{i}",
            make(f"s{i}", ok=o == "ok"),
            can_handle=(lambda e: False) if o == "skip" else None,
        )
        for i, o in enumerate(outcomes)
    ]
    chain = FallbackChain(*strategies)
    expected_runs = []
    winner = None
    for i, o in enumerate(outcomes):
        if o == "skip":
            continue
        expected_runs.append(f"s{i}")
        if o == "ok":
            winner = f"s{i}"
            break
    try:
        result = await chain.call(make("primary", ok=False))
    except FallbackChainFailed as group:
        assert winner is None
        assert [str(e) for e in group.exceptions] == ["primary", *expected_runs]
    else:
        assert winner is not None
        assert result.startswith(winner + ":")
    assert log == ["primary", *expected_runs]


async def test_chain_predicate_error_propagates() -> None:
    """An error raised by can_handle propagates as is."""

    def broken(exc: Exception) -> bool:
        raise RuntimeError("predicate broke")

    chain = FallbackChain(Strategy("a", lambda: "x", can_handle=broken))
    with pytest.raises(RuntimeError, match="predicate broke"):
        await chain.call(fails)


async def test_chain_cancellation_propagates_without_strategies() -> None:
    """Cancellation of the wrapped call runs no strategy."""
    log, make = calls_log()
    chain = FallbackChain(Strategy("a", make("a", ok=True)))
    with anyio.move_on_after(1):
        await chain.call(anyio.sleep, 5)
    assert log == []


async def test_chain_events_name_the_strategy() -> None:
    """A FallbackUsed event names the strategy that answered."""
    events: list[Event] = []
    chain = FallbackChain(Strategy("cache", lambda: "cached"), observers=[events.append])
    assert await chain.call(fails) == "cached"
    assert events == [FallbackUsed("fallback_chain", "fallback-chain", "cache", "ConnectionError")]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: FallbackChain(), "strategies"),
        (lambda: FallbackChain(lambda: 1), "Strategy"),  # type: ignore[arg-type]
        (lambda: FallbackChain(Strategy("a", print), Strategy("a", print)), "unique"),
        (lambda: Strategy("a", 3), "fn.*3"),  # type: ignore[arg-type]
        (lambda: Strategy("", print), "name"),
        (lambda: Fallback(3), "handler.*3"),  # type: ignore[arg-type]
        (lambda: Fallback(print, on=(SystemExit,)), "on"),
    ],
)
def test_bad_configuration(build: Any, match: str) -> None:
    """Invalid fallback configuration raises ValueError naming what is wrong."""
    with pytest.raises(ValueError, match=match):
        build()


async def _raise_at_one() -> str:
    await anyio.sleep(1.0)
    raise ConnectionError


async def _cleanup_raises_when_cancelled() -> str:
    try:
        await anyio.sleep(5.0)
    finally:
        raise ConnectionError("cleanup failed while being cancelled")
    return "never"


async def _handler_runs_seeing_a_cancel_as_the_call_fails(kind: str) -> list[bool]:
    """One run: for each handler run, whether the caller's scope was already cancelled."""
    ran: list[bool] = []
    scope = anyio.CancelScope()

    def handler(*_: object) -> str:
        ran.append(scope.cancel_called)
        return "fb"

    policy: Any = Fallback(handler) if kind == "fallback" else FallbackChain(Strategy("s", handler))

    async def canceller() -> None:
        await anyio.sleep(1.0)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(canceller)
        await anyio.lowlevel.checkpoint()  # the canceller's timer is due first at t=1
        with scope:
            await policy.call(_raise_at_one)
    return ran


@pytest.mark.parametrize("kind", ["fallback", "chain"])
async def test_a_caller_cancelled_in_the_same_instant_gets_no_fallback(kind: str) -> None:
    """The call fails at t=1 and another task cancels the caller at t=1, first: no handler
    or strategy runs and the caller's cancellation is not lost (cancellation wins)."""
    for _ in range(10):  # trio orders tasks woken together at random: several runs
        ran = await _handler_runs_seeing_a_cancel_as_the_call_fails(kind)
        assert True not in ran, ran


@pytest.mark.parametrize("kind", ["fallback", "chain"])
async def test_an_error_raised_while_being_cancelled_gets_no_fallback(kind: str) -> None:
    """The caller is cancelled and the call's cleanup raises an ordinary error in place of
    the cancellation: the caller's cancellation still wins, nothing falls back."""
    policy: Any = (
        Fallback(lambda exc: "fb") if kind == "fallback" else FallbackChain(Strategy("s", str))
    )
    with anyio.move_on_after(1.0) as scope:
        await policy.call(_cleanup_raises_when_cancelled)
    assert scope.cancelled_caught
