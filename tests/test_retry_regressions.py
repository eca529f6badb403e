"""Retry regressions found by the chaos soak (``benchmarks/soak.py``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import pytest

from resilient import Backoff, Retry

pytestmark = pytest.mark.anyio


class Refused(ConnectionError):
    """A downstream error that keeps a weak reference to each of its instances."""

    made: ClassVar[list[weakref.ref[Refused]]] = []

    def __init__(self, attempt: int) -> None:
        super().__init__(f"attempt {attempt} refused")
        Refused.made.append(weakref.ref(self))


@contextmanager
def cycle_collector_off() -> Iterator[None]:
    """Only reference counting frees objects inside the block."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("use", ["call", "decorator"])
@pytest.mark.parametrize("failures", [1, 2, 3], ids=["then-ok", "twice-then-ok", "gives-up"])
async def test_retried_errors_are_not_kept_in_reference_cycles(use: str, failures: int) -> None:
    """Each attempt's error is freed once the call is over, without the cycle collector.

    The soak found every retried call leaving a cycle (a frame holding the
    error, the error's traceback holding the frame): memory climbed under
    failures until a full collection ran.
    """
    Refused.made = []
    retry = Retry("regression", attempts=3, backoff=Backoff.constant(0.0))

    async def flaky() -> str:
        attempt = len(Refused.made) + 1
        if attempt <= failures:
            raise Refused(attempt)
        return "ok"

    run = retry.call if use == "call" else (lambda f: retry(f)())
    with cycle_collector_off():
        try:
            answer = await run(flaky)
        except Refused:
            answer = "gave up"
        assert answer == ("gave up" if failures == 3 else "ok")
        assert len(Refused.made) == failures
        alive = [ref() for ref in Refused.made]
        assert alive == [None] * failures, f"errors still referenced: {alive!r}"
