"""Bulkhead against a model: random arrivals, outcomes, cancellations and clock advances.

A hypothesis state machine drives a real bulkhead on a real event loop (both
anyio backends) through a blocking portal, and compares it after every step
with a few lines of model. The loop runs on a virtual clock that never jumps
by itself: time moves only when the machine advances it, so the steps are
exact and repeatable.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any

import anyio
import anyio.from_thread
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from resilient import Bulkhead, BulkheadFullError
from resilient.testing import VirtualTimeEventLoop

# Virtual time that moves only when told: asyncio's virtual loop waits for
# I/O (the portal's wake-ups) instead of jumping to the next timer, and
# trio's MockClock without autojump stands still.
_NEVER = 1e6  # real seconds; well inside epoll's limit


class JobFailed(Exception):
    """The error a job raises when the machine fails it."""


async def _settle(backend: str) -> None:
    """Run every task until all are blocked, without moving the clock."""
    if backend == "trio":
        import trio.testing

        await trio.testing.wait_all_tasks_blocked()
        return
    # anyio's wait_all_tasks_blocked sleeps 0.1 s between looks, which on a
    # virtual clock would move time; so look at the loop directly (test code).
    loop: Any = asyncio.get_running_loop()
    me = asyncio.current_task()
    for _ in range(10_000):
        await asyncio.sleep(0)
        due = any(h.when() <= loop.time() and not h.cancelled() for h in loop._scheduled)
        busy = any(
            t is not me and (t._fut_waiter is None or t._fut_waiter.done())
            for t in asyncio.all_tasks()
        )
        if not loop._ready and not due and not busy:
            return
    raise AssertionError("the loop did not settle")


class Model:
    """What the bulkhead should do: who runs, who waits (until when), what became of whom."""

    def __init__(self, max_concurrent: int, max_wait: float | None, max_queue: int | None):
        self.max_concurrent = max_concurrent
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.time = 0.0
        self.running: list[int] = []
        self.queue: list[tuple[int, float]] = []  # (call, deadline), first in line first
        self.admitted: list[int] = []
        self.outcomes: dict[int, str] = {}

    def arrive(self, k: int) -> None:
        if len(self.running) < self.max_concurrent:
            self._admit(k)
        elif self.max_queue is not None and len(self.queue) >= self.max_queue:
            self.outcomes[k] = "queue_full"
        elif self.max_wait == 0:
            self.outcomes[k] = "max_wait"
        else:
            wait = math.inf if self.max_wait is None else self.max_wait
            self.queue.append((k, self.time + wait))

    def _admit(self, k: int) -> None:
        self.running.append(k)
        self.admitted.append(k)

    def finish(self, k: int, outcome: str) -> None:
        self.running.remove(k)
        self.outcomes[k] = outcome
        if self.queue:
            self._admit(self.queue.pop(0)[0])

    def leave(self, k: int) -> None:
        self.queue = [(q, d) for q, d in self.queue if q != k]
        self.outcomes[k] = "cancelled"

    def advance(self, seconds: float) -> None:
        self.time += seconds
        for k, deadline in list(self.queue):
            if deadline <= self.time:
                self.leave(k)
                self.outcomes[k] = "max_wait"


class BulkheadMachine(RuleBasedStateMachine):
    """Drives one bulkhead on one loop; ``backend`` is set by the test."""

    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        if self.backend == "trio":
            import trio.testing

            self.clock: Any = trio.testing.MockClock()
            options: dict[str, Any] = {"clock": self.clock}
        else:
            factory = functools.partial(VirtualTimeEventLoop, autojump_threshold=_NEVER)
            options = {"loop_factory": factory}
        self._cm = anyio.from_thread.start_blocking_portal(self.backend, options)
        self.portal = self._cm.__enter__()
        self.next_id = 0
        self.scopes: dict[int, anyio.CancelScope] = {}
        self.releases: dict[int, anyio.Event] = {}
        self.failing: set[int] = set()
        self.admitted: list[int] = []
        self.outcomes: dict[int, str] = {}

    # --- driving the loop ---------------------------------------------------

    def _step(self, action: Any = None) -> None:
        """Run ``action`` (a sync function) on the loop, then let it settle."""

        async def step() -> None:
            if action is not None:
                action()
            await _settle(self.backend)

        self.portal.call(step)

    async def _caller(self, k: int) -> None:
        with anyio.CancelScope() as scope:
            self.scopes[k] = scope
            try:
                await self.bulkhead.call(self._job, k)
            except BulkheadFullError as exc:
                self.outcomes[k] = exc.reason
            except JobFailed:
                self.outcomes[k] = "failed"
            else:
                self.outcomes[k] = "done"
        if scope.cancelled_caught:
            self.outcomes[k] = "cancelled"

    async def _job(self, k: int) -> None:
        self.admitted.append(k)
        event = self.releases[k] = anyio.Event()
        await event.wait()
        if k in self.failing:
            raise JobFailed(k)

    # --- rules --------------------------------------------------------------

    @initialize(
        max_concurrent=st.integers(1, 3),
        max_wait=st.sampled_from([None, 0.0, 0.5, 1.0, 2.5]),
        max_queue=st.one_of(st.none(), st.integers(0, 3)),
    )
    def configure(self, max_concurrent: int, max_wait: float | None, max_queue: int | None) -> None:
        self.bulkhead = Bulkhead("model", max_concurrent, max_wait=max_wait, max_queue=max_queue)
        self.model = Model(max_concurrent, max_wait, max_queue)

    @rule()
    def arrive(self) -> None:
        k = self.next_id
        self.next_id += 1
        self.portal.start_task_soon(self._caller, k)
        self._step()
        self.model.arrive(k)

    @precondition(lambda self: self.model.running)
    @rule(data=st.data(), outcome=st.sampled_from(["done", "failed", "cancelled"]))
    def finish_running(self, data: st.DataObject, outcome: str) -> None:
        k = data.draw(st.sampled_from(self.model.running))
        if outcome == "failed":
            self.failing.add(k)
        if outcome == "cancelled":
            self._step(self.scopes[k].cancel)
        else:
            self._step(self.releases[k].set)
        self.model.finish(k, outcome)

    @precondition(lambda self: self.model.queue)
    @rule(data=st.data())
    def cancel_waiting(self, data: st.DataObject) -> None:
        k = data.draw(st.sampled_from([q for q, _ in self.model.queue]))
        self._step(self.scopes[k].cancel)
        self.model.leave(k)

    @precondition(lambda self: self.model.running and self.model.queue)
    @rule(data=st.data())
    def finish_and_cancel_first_waiter(self, data: st.DataObject) -> None:
        """The permit goes to the first waiter as it is cancelled: the next one gets it."""
        k = data.draw(st.sampled_from(self.model.running))
        first = self.model.queue[0][0]

        def both() -> None:
            self.releases[k].set()
            self.scopes[first].cancel()

        self._step(both)
        self.model.leave(first)
        self.model.finish(k, "done")

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.5]))
    def advance(self, seconds: float) -> None:
        if self.backend == "trio":
            self._step(functools.partial(self.clock.jump, seconds))
        else:
            self._step(lambda: asyncio.get_running_loop().advance(seconds))  # type: ignore[attr-defined]
        self.model.advance(seconds)

    # --- checks -------------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        bh, model = self.bulkhead, self.model
        assert bh.active <= bh.max_concurrent
        if bh.max_queue is not None:
            assert bh.waiting <= bh.max_queue
        assert (bh.active, bh.waiting) == (len(model.running), len(model.queue))
        assert bh.available == bh.max_concurrent - bh.active
        assert self.admitted == model.admitted  # first in, first out
        assert self.outcomes == model.outcomes

    def teardown(self) -> None:
        try:
            # Finish everything: each finished call admits the next waiter.
            for _ in range(self.next_id + 1):
                if not self.model.running:
                    break
                for k in list(self.model.running):
                    self._step(self.releases[k].set)
                    self.model.finish(k, "done")
            self.agrees_with_the_model()
            assert (self.bulkhead.active, self.bulkhead.waiting) == (0, 0)
            assert set(self.outcomes) == set(range(self.next_id))
        finally:

            def cancel_all() -> None:
                for scope in self.scopes.values():
                    scope.cancel()

            self._step(cancel_all)
            self._cm.__exit__(None, None, None)


def test_bulkhead_matches_its_model(anyio_backend: tuple[str, dict[str, Any]]) -> None:
    """At every step: active <= max_concurrent, waiting <= max_queue, FIFO, outcomes as modelled."""
    # The backend from the conftest fixture; its clock options autojump, so
    # the machine builds its own still-standing clock (see the module docstring).
    backend = anyio_backend[0]
    machine = type(f"BulkheadMachine_{backend}", (BulkheadMachine,), {"backend": backend})
    run_state_machine_as_test(
        machine, settings=settings(max_examples=200, stateful_step_count=40, deadline=None)
    )
