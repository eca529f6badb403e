"""Bulkhead: limits, FIFO waiting, max_wait and max_queue, a permit back on every exit, events."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import resilient._anyio
import resilient.bulkhead
from resilient import (
    Bulkhead,
    BulkheadFullError,
    CallRejected,
    Event,
    PermitAcquired,
    PermitReleased,
)
from resilient._time import now
from resilient.testing import run

pytestmark = pytest.mark.anyio


def recorder() -> tuple[list[Event], Callable[[Event], None]]:
    events: list[Event] = []
    return events, events.append


class Gate:
    """A job that records its start and waits until it is opened (or fails)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._events: dict[str, anyio.Event] = {}
        self._fail: set[str] = set()

    def job(self, key: str) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            self.started.append(key)
            event = self._events.setdefault(key, anyio.Event())
            await event.wait()
            if key in self._fail:
                raise ConnectionError(key)
            return key

        return run

    def open(self, key: str, *, fail: bool = False) -> None:
        if fail:
            self._fail.add(key)
        self._events.setdefault(key, anyio.Event()).set()


async def settle() -> None:
    """Let every task run until it blocks (virtual time does not move)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


# --- construction -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_concurrent": 0}, "max_concurrent must be an int >= 1, got 0"),
        ({"max_concurrent": -3}, "max_concurrent must be an int >= 1, got -3"),
        ({"max_concurrent": 2.0}, "max_concurrent must be an int >= 1, got 2.0"),
        ({"max_concurrent": True}, "max_concurrent must be an int >= 1, got True"),
        (
            {"max_concurrent": 1, "max_wait": -1},
            "max_wait must be a number of seconds >= 0, got -1",
        ),
        ({"max_concurrent": 1, "max_wait": math.nan}, "max_wait must be a number of seconds"),
        (
            {"max_concurrent": 1, "max_wait": "5"},
            "max_wait must be a number of seconds >= 0, got '5'",
        ),
        ({"max_concurrent": 1, "max_queue": -1}, "max_queue must be an int >= 0, got -1"),
        ({"max_concurrent": 1, "max_queue": 2.5}, "max_queue must be an int >= 0, got 2.5"),
    ],
)
def test_bad_configuration_names_argument_and_value(kwargs: dict[str, Any], needle: str) -> None:
    """Invalid options raise ValueError naming the bulkhead, the argument and the value."""
    with pytest.raises(ValueError, match="Bulkhead\\('pool'\\)") as info:
        Bulkhead("pool", **kwargs)
    assert needle in str(info.value)


def test_bad_name_is_refused() -> None:
    """An empty name is a ValueError."""
    with pytest.raises(ValueError, match="name"):
        Bulkhead("", 1)


def test_built_without_a_loop_with_readable_settings() -> None:
    """A bulkhead is built outside any event loop; settings and counters read back."""
    bh = Bulkhead("core", 100, max_wait=5.0, max_queue=7)
    assert (bh.name, bh.max_concurrent, bh.max_wait, bh.max_queue) == ("core", 100, 5.0, 7)
    assert (bh.active, bh.waiting, bh.available) == (0, 0, 100)
    assert repr(bh) == "Bulkhead('core', 100, max_wait=5.0, max_queue=7)"
    defaults = Bulkhead("tools", max_concurrent=20)
    assert (defaults.max_wait, defaults.max_queue) == (None, None)


def test_options_after_max_concurrent_are_keyword_only() -> None:
    """``max_wait`` cannot be given positionally (only ``max_concurrent`` can)."""
    with pytest.raises(TypeError):
        Bulkhead("core", 1, 5.0)  # type: ignore[misc]


# --- admission ----------------------------------------------------------------


async def test_free_permit_runs_the_call_and_returns_its_value() -> None:
    """With a permit free the call runs at once, holds a permit, and gives it back."""
    bh = Bulkhead("db", 2)
    seen: list[tuple[int, int, int]] = []

    async def work(x: int, *, y: int) -> int:
        seen.append((bh.active, bh.waiting, bh.available))
        return x + y

    assert await bh.call(work, 1, y=2) == 3
    assert seen == [(1, 0, 1)]
    assert (bh.active, bh.waiting, bh.available) == (0, 0, 2)


async def test_decorator_runs_through_the_bulkhead() -> None:
    """Decorating an async function admits every call through the bulkhead."""
    bh = Bulkhead("db", 1)
    seen: list[int] = []

    @bh
    async def work(x: int) -> int:
        seen.append(bh.active)
        return x * 2

    assert await work(21) == 42
    assert work.__name__ == "work"
    assert seen == [1]


async def test_never_more_than_max_concurrent_run() -> None:
    """Fifty concurrent calls through a bulkhead of 3 never run more than 3 at once."""
    bh = Bulkhead("db", 3)
    running = 0
    peak = 0

    async def work(n: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(1 + n % 4)
        running -= 1

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(bh.call, work, n)
    assert peak == 3
    assert (bh.active, bh.waiting) == (0, 0)


async def test_waiters_are_admitted_first_in_first_out() -> None:
    """Waiters run in the order they arrived, one per released permit."""
    bh = Bulkhead("db", 2)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        for key in "abcdef":
            tg.start_soon(bh.call, gate.job(key))
            await settle()
        assert gate.started == ["a", "b"]
        assert (bh.active, bh.waiting) == (2, 4)
        for key in "badcfe":
            gate.open(key)
            await settle()
    assert gate.started == list("abcdef")
    assert (bh.active, bh.waiting) == (0, 0)


async def test_newcomer_does_not_overtake_a_woken_waiter() -> None:
    """A permit handed to a waiter is not free in between: a newcomer queues behind."""
    bh = Bulkhead("db", 1)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, gate.job("a"))
        await settle()
        tg.start_soon(bh.call, gate.job("b"))
        await settle()
        gate.open("a")
        # Before "b" has had a turn to run, "c" arrives.
        tg.start_soon(bh.call, gate.job("c"))
        await settle()
        assert gate.started == ["a", "b"]
        assert (bh.active, bh.waiting) == (1, 1)
        gate.open("b")
        gate.open("c")
    assert gate.started == ["a", "b", "c"]


# --- max_wait and max_queue ---------------------------------------------------


async def test_waiting_ends_after_max_wait_with_max_wait_reason() -> None:
    """A waiter that gets no permit within max_wait seconds gets BulkheadFullError('max_wait')."""
    bh = Bulkhead("core", 1, max_wait=5.0)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, gate.job("a"))
        await settle()
        start = now()
        with pytest.raises(BulkheadFullError) as info:
            await bh.call(gate.job("b"))
        assert now() - start == pytest.approx(5.0)
        assert (info.value.name, info.value.reason) == ("core", "max_wait")
        assert "'core'" in str(info.value)
        assert "max_wait=5s" in str(info.value)
        assert (bh.active, bh.waiting) == (1, 0)
        gate.open("a")
    assert gate.started == ["a"]
    assert (bh.active, bh.waiting) == (0, 0)


async def test_waiter_admitted_before_max_wait_runs() -> None:
    """A permit freed before max_wait runs the waiter, which reports how long it waited."""
    events, observer = recorder()
    bh = Bulkhead("core", 1, max_wait=5.0, observers=[observer])

    async def hold() -> None:
        await anyio.sleep(3.0)

    async def quick() -> str:
        return "ran"

    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, hold)
        await settle()
        start = now()
        assert await bh.call(quick) == "ran"
        assert now() - start == pytest.approx(3.0)
    waits = [e.waited for e in events if isinstance(e, PermitAcquired)]
    assert waits == [0.0, pytest.approx(3.0)]


async def test_zero_max_wait_rejects_at_once_when_full() -> None:
    """max_wait=0 rejects at once (reason 'max_wait') when every permit is taken."""
    bh = Bulkhead("analytics", 1, max_wait=0)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, gate.job("a"))
        await settle()
        start = now()
        with pytest.raises(BulkheadFullError) as info:
            await bh.call(gate.job("b"))
        assert now() == start
        assert info.value.reason == "max_wait"
        assert "max_wait=0" in str(info.value)
        assert bh.waiting == 0
        gate.open("a")
    assert gate.started == ["a"]


async def test_zero_max_queue_never_waits() -> None:
    """max_queue=0 rejects at once (reason 'queue_full') when every permit is taken."""
    bh = Bulkhead("db", 1, max_queue=0)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, gate.job("a"))
        await settle()
        with pytest.raises(BulkheadFullError) as info:
            await bh.call(gate.job("b"))
        assert info.value.reason == "queue_full"
        assert "max_queue=0" in str(info.value)
        gate.open("a")
    assert (bh.active, bh.waiting) == (0, 0)


async def test_max_queue_bounds_the_waiters() -> None:
    """With max_queue waiters in line the next caller is rejected; one leaving makes room."""
    bh = Bulkhead("db", 1, max_queue=2)
    gate = Gate()
    async with anyio.create_task_group() as tg:
        for key in "abc":
            tg.start_soon(bh.call, gate.job(key))
            await settle()
        assert (bh.active, bh.waiting) == (1, 2)
        with pytest.raises(BulkheadFullError) as info:
            await bh.call(gate.job("d"))
        assert info.value.reason == "queue_full"
        assert "2 calls already waiting (max_queue=2)" in str(info.value)
        gate.open("a")
        await settle()
        assert (bh.active, bh.waiting) == (1, 1)
        tg.start_soon(bh.call, gate.job("e"))
        await settle()
        assert bh.waiting == 2
        for key in "bce":
            gate.open(key)
    assert gate.started == ["a", "b", "c", "e"]


async def test_infinite_max_wait_waits_without_limit() -> None:
    """max_wait=inf is the same as None: a waiter waits as long as it takes."""
    bh = Bulkhead("db", 1, max_wait=math.inf)

    async def hold() -> None:
        await anyio.sleep(10_000)

    async def quick() -> str:
        return "done"

    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, hold)
        await settle()
        assert await bh.call(quick) == "done"


# --- a permit back on every exit ------------------------------------------------


async def test_exception_releases_the_permit_and_propagates() -> None:
    """An exception from the call propagates unchanged and frees its permit for the next waiter."""
    bh = Bulkhead("db", 1)
    gate = Gate()
    outcome: list[BaseException] = []

    async def first() -> None:
        try:
            await bh.call(gate.job("a"))
        except ConnectionError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await settle()
        tg.start_soon(bh.call, gate.job("b"))
        await settle()
        gate.open("a", fail=True)
        await settle()
        assert gate.started == ["a", "b"]
        assert bh.active == 1
        gate.open("b")
    assert [str(e) for e in outcome] == ["a"]
    assert (bh.active, bh.waiting) == (0, 0)


async def test_cancel_while_running_frees_the_permit() -> None:
    """Cancelling a running call propagates the cancellation and hands its permit on."""
    bh = Bulkhead("db", 1)
    gate = Gate()
    cancelled: list[str] = []

    async def first() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await bh.call(gate.job("a"))
        if scope.cancelled_caught:
            cancelled.append("a")

    scopes: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await settle()
        tg.start_soon(bh.call, gate.job("b"))
        await settle()
        assert (bh.active, bh.waiting) == (1, 1)
        scopes[0].cancel()
        await settle()
        assert cancelled == ["a"]
        assert gate.started == ["a", "b"]
        assert (bh.active, bh.waiting) == (1, 0)
        gate.open("b")
    assert (bh.active, bh.waiting) == (0, 0)


async def test_cancel_while_waiting_leaves_the_line() -> None:
    """A cancelled waiter leaves the line without a permit; the others keep their places."""
    bh = Bulkhead("db", 1)
    gate = Gate()
    scopes: dict[str, anyio.CancelScope] = {}

    async def caller(key: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[key] = scope
            await bh.call(gate.job(key))

    async with anyio.create_task_group() as tg:
        for key in "abcd":
            tg.start_soon(caller, key)
            await settle()
        scopes["c"].cancel()
        await settle()
        assert (bh.active, bh.waiting) == (1, 2)
        for key in "abd":
            gate.open(key)
            await settle()
    assert gate.started == ["a", "b", "d"]
    assert (bh.active, bh.waiting) == (0, 0)


@pytest.fixture(params=["known", "unknown"], ids=["anyio-internals-known", "unknown"])
def anyio_internals(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The bulkhead reads anyio's task states directly; "unknown": as if their shape changed."""
    if request.param == "unknown":
        import types

        fake = types.ModuleType("fake_anyio_backend")  # no _task_states: an AttributeError
        monkeypatch.setitem(__import__("sys").modules, "fake_anyio_backend", fake)
        monkeypatch.setattr(resilient._anyio, "ANYIO_ASYNCIO", "fake_anyio_backend")
    return str(request.param)


@pytest.mark.parametrize(
    "cancel_first", [True, False], ids=["cancel-then-grant", "grant-then-cancel"]
)
@pytest.mark.parametrize("observed", [True, False], ids=["observed", "quiet"])
@pytest.mark.usefixtures("anyio_internals")
async def test_waiter_granted_and_cancelled_in_one_instant_passes_the_permit_on(
    cancel_first: bool, observed: bool
) -> None:
    """A waiter handed a permit and cancelled in the same instant passes it on, exactly once.

    Observed and not: on asyncio a wait nobody times takes its own, inline path.
    """
    events, observer = recorder()
    bh = Bulkhead("db", 1, observers=[observer] if observed else [])
    gate = Gate()
    scopes: dict[str, anyio.CancelScope] = {}
    outcome: dict[str, str] = {}

    async def caller(key: str) -> None:
        with anyio.CancelScope() as scope:
            scopes[key] = scope
            outcome[key] = await bh.call(gate.job(key))
            return
        outcome[key] = "cancelled"

    async def holder() -> None:
        # Release "a"'s permit and cancel "b" with no yield in between, in
        # either order: "b" is woken holding a permit and a cancellation.
        async def hold() -> str:
            await gate.job("a")()
            if cancel_first:
                scopes["b"].cancel()
            return "a"

        outcome["a"] = await bh.call(hold)
        if not cancel_first:
            scopes["b"].cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await settle()
        for key in "bc":
            tg.start_soon(caller, key)
            await settle()
        assert (bh.active, bh.waiting) == (1, 2)
        gate.open("a")
        await settle()
        assert gate.started == ["a", "c"]
        assert (bh.active, bh.waiting) == (1, 0)
        gate.open("c")
    assert outcome == {"a": "a", "b": "cancelled", "c": "c"}
    assert (bh.active, bh.waiting, bh.available) == (0, 0, 1)
    acquired = sum(isinstance(e, PermitAcquired) for e in events)
    released = sum(isinstance(e, PermitReleased) for e in events)
    assert acquired == released == (2 if observed else 0)


async def test_grant_at_the_max_wait_instant_leaks_nothing() -> None:
    """A permit freed exactly when a waiter's max_wait runs out is used or returned, never lost."""
    bh = Bulkhead("db", 1, max_wait=2.0)
    outcome: list[str] = []

    async def hold() -> None:
        await anyio.sleep(2.0)

    async def quick() -> str:
        return "ran"

    async def waiter() -> None:
        try:
            outcome.append(await bh.call(quick))
        except BulkheadFullError as exc:
            outcome.append(exc.reason)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, hold)
        await settle()
        tg.start_soon(waiter)
        await settle()
    assert outcome in (["ran"], ["max_wait"])
    assert (bh.active, bh.waiting, bh.available) == (0, 0, 1)
    assert await bh.call(quick) == "ran"


# --- events -------------------------------------------------------------------


async def test_events_for_acquired_released_and_rejected() -> None:
    """Observers see PermitAcquired (with seconds waited), PermitReleased and CallRejected."""
    events, observer = recorder()
    bh = Bulkhead("core", 1, max_wait=5.0, max_queue=1, observers=[observer])

    async def hold(seconds: float) -> None:
        await anyio.sleep(seconds)

    async def rejected() -> None:
        with pytest.raises(BulkheadFullError):
            await bh.call(hold, 0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, hold, 3.0)
        await settle()
        tg.start_soon(bh.call, hold, 1.0)  # waits 3 s
        await settle()
        await rejected()  # queue full
    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, hold, 10.0)
        await settle()
        await rejected()  # waits 5 s: max_wait
        tg.cancel_scope.cancel()
    assert events == [
        PermitAcquired("bulkhead", "core", 0.0),
        CallRejected("bulkhead", "core", "queue_full"),
        PermitReleased("bulkhead", "core"),
        PermitAcquired("bulkhead", "core", pytest.approx(3.0)),  # type: ignore[arg-type]
        PermitReleased("bulkhead", "core"),
        PermitAcquired("bulkhead", "core", 0.0),
        CallRejected("bulkhead", "core", "max_wait"),
        PermitReleased("bulkhead", "core"),
    ]


async def test_no_event_is_built_without_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nobody listening the bulkhead builds no event at all (fast and slow paths)."""

    def boom(*args: object) -> None:
        raise AssertionError("an event was built with no listener")

    for cls in ("PermitAcquired", "PermitReleased", "CallRejected"):
        monkeypatch.setattr(resilient.bulkhead, cls, boom)
    bh = Bulkhead("db", 1, max_wait=1.0)

    async def hold() -> None:
        await anyio.sleep(2.0)

    async def times_out() -> None:
        with pytest.raises(BulkheadFullError):
            await bh.call(hold)

    async with anyio.create_task_group() as tg:
        tg.start_soon(bh.call, hold)
        await settle()
        tg.start_soon(times_out)
    assert (bh.active, bh.waiting) == (0, 0)


# --- hooks and event loops ----------------------------------------------------


async def test_fault_hook_wraps_the_call_inside_the_permit() -> None:
    """The fault-injection hook replaces the call, and the injected call holds the permit."""
    bh = Bulkhead("db", 1)
    seen: list[int] = []

    def fault(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def injected(*args: Any, **kwargs: Any) -> Any:
            seen.append(bh.active)
            raise ConnectionError("injected")

        return injected

    bh._fault = fault

    async def work() -> str:
        return "real"

    with pytest.raises(ConnectionError, match="injected"):
        await bh.call(work)
    assert seen == [1]
    assert bh.active == 0
    bh._fault = None
    assert await bh.call(work) == "real"


_SHARED = Bulkhead("module-level", 2, max_wait=1.5)


def test_one_bulkhead_serves_several_event_loops_in_turn() -> None:
    """A bulkhead built at import time works on asyncio, then trio, then asyncio again."""

    async def main() -> list[str]:
        outcome: list[str] = []

        async def work() -> None:
            await anyio.sleep(1.0)

        async def caller() -> None:
            try:
                await _SHARED.call(work)
                outcome.append("ran")
            except BulkheadFullError as exc:
                outcome.append(exc.reason)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(caller)
        return sorted(outcome)

    for backend in ("asyncio", "trio", "asyncio"):
        # 2 run at t=0, 2 at t=1 (waited 1 s), the fifth's 1.5 s wait runs out.
        assert run(main, backend=backend) == ["max_wait", "ran", "ran", "ran", "ran"]
        assert (_SHARED.active, _SHARED.waiting) == (0, 0)


def test_plain_asyncio_cancel_of_a_granted_waiter_passes_the_permit_on() -> None:
    """With bare asyncio tasks, a waiter cancelled right after its grant passes the permit on."""

    async def main() -> tuple[list[str], bool, tuple[int, int]]:
        bh = Bulkhead("db", 1)
        gate = Gate()
        tasks: dict[str, asyncio.Task[Any]] = {}

        async def holder() -> None:
            await bh.call(gate.job("a"))  # releases: "b" is handed the permit...
            tasks["b"].cancel()  # ...and cancelled before it runs again

        tasks["a"] = asyncio.create_task(holder())
        await settle()
        b = tasks["b"] = asyncio.create_task(bh.call(gate.job("b")))
        c = asyncio.create_task(bh.call(gate.job("c")))
        await settle()
        gate.open("a")
        await settle()
        gate.open("c")
        with contextlib.suppress(TimeoutError):  # a lost permit would leave "c" waiting
            await asyncio.wait_for(c, 60)
        return gate.started, b.cancelled(), (bh.active, bh.waiting)

    started, b_cancelled, counters = run(main, backend="asyncio")
    assert started == ["a", "c"]
    assert b_cancelled
    assert counters == (0, 0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cancel_check_after_a_grant_reads_anyio_scopes() -> None:
    """The cheap check sees a cancelled scope, stops at a shield, and is False elsewhere."""
    pending = resilient._anyio.cancel_pending
    loop = asyncio.get_running_loop()
    assert not pending(loop)
    with anyio.CancelScope() as outer:
        assert not pending(loop)
        outer.cancel()
        assert pending(loop)
        with anyio.CancelScope(shield=True):
            with anyio.CancelScope():
                assert not pending(loop)
                await anyio.lowlevel.checkpoint()  # shielded: goes on
            assert not pending(loop)
            await anyio.lowlevel.checkpoint()
        assert pending(loop)
        await anyio.lowlevel.checkpoint()
        pytest.fail("the cancelled scope let the task go on")
    assert outer.cancelled_caught
    assert not pending(loop)

    async def plain_task() -> bool:
        return pending(loop)

    assert await asyncio.get_running_loop().create_task(plain_task()) is False
