"""Bulkhead overhead and throughput, against bare semaphores and peer libraries.

Run it with ``python benchmarks/bench_bulkhead.py`` (``--quick`` for a smoke
run). Peers come from the ``bench`` extra: ``pip install -e '.[bench]'``.

Two measurements, each with every contender in the same run:

1. **Uncontended overhead**: one call at a time through a bulkhead with
   permits to spare, per call, with the shared harness (``_harness.py``:
   warm-up, shuffled rounds, median and IQR, ratio to a bare await). On
   asyncio against ``asyncio.Semaphore``, ``anyio.Semaphore`` and the
   bulkheads of hyx, pyresilience and aioresilience; on trio against
   ``trio.Semaphore`` and ``anyio.Semaphore`` (the peers are asyncio-only).
2. **Contended throughput**: 10,000 tasks started at once through a
   bulkhead of 100, each holding its permit for one loop turn
   (``sleep(0)``); the figure is the wall time until all have finished,
   median over shuffled rounds. Each round checks that every task ran and
   that no more than 100 ran at once.

Every peer is used through its documented API with the closest settings:
a queue long enough for all 10,000 tasks and no wait limit, and, where a
peer only supports waiting with a time limit, a 5 s limit (also measured
for ours, which then runs each wait in a cancel scope).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import trio
import trio.lowlevel
from _harness import Case, Result, parse_args, print_table, run_cases, target

from resilient import Bulkhead

TASKS = 10_000
LIMIT = 100
Call = Callable[[], Awaitable[Any]]


def _peers_installed() -> bool:
    try:
        import aioresilience  # noqa: F401
        import hyx  # noqa: F401
        import pyresilience  # noqa: F401
    except ImportError as exc:
        print(f"peer missing ({exc}); install them with: pip install -e '.[bench]'")
        return False
    return True


# --- the contenders, as zero-argument calls wrapping ``fn`` ---------------------


def semaphore_call(sem: Any, fn: Call) -> Call:
    """The bare-semaphore baseline: ``async with sem: await fn()``."""

    async def call() -> Any:
        async with sem:
            return await fn()

    return call


def ours(fn: Call, **options: Any) -> Call:
    return functools.partial(Bulkhead("bench", LIMIT, **options).call, fn)


def ours_decorated(fn: Call) -> Call:
    return Bulkhead("bench", LIMIT)(fn)


def hyx_call(fn: Call) -> Call:
    from hyx.bulkhead import bulkhead

    # max_capacity counts running and queued calls.
    return bulkhead(max_concurrency=LIMIT, max_capacity=LIMIT + TASKS)(fn)


def pyresilience_call(fn: Call, max_wait: float) -> Call:
    from pyresilience import BulkheadConfig, resilient

    # max_wait=0: reject at once when full; > 0: wait up to that many seconds.
    return resilient(bulkhead=BulkheadConfig(max_concurrent=LIMIT, max_wait=max_wait))(fn)


def aioresilience_call(fn: Call, timeout: float | None) -> Call:
    from aioresilience import Bulkhead as AioBulkhead
    from aioresilience.config import BulkheadConfig

    config = BulkheadConfig(max_concurrent=LIMIT, max_waiting=TASKS, timeout=timeout)
    return functools.partial(AioBulkhead(name="bench", config=config).execute, fn)


def _setup(make: Callable[[], Call]) -> Callable[[], Awaitable[Call]]:
    """A harness setup: build the contender inside the running loop."""

    async def setup() -> Call:
        return make()

    return setup


# --- 1. uncontended overhead ------------------------------------------------------


def asyncio_overhead_cases(with_peers: bool) -> list[Case]:
    cases = [
        Case("asyncio.Semaphore", _setup(lambda: semaphore_call(asyncio.Semaphore(LIMIT), target))),
        Case("anyio.Semaphore", _setup(lambda: semaphore_call(anyio.Semaphore(LIMIT), target))),
        Case(
            "anyio.Semaphore(fast_acquire)",
            _setup(lambda: semaphore_call(anyio.Semaphore(LIMIT, fast_acquire=True), target)),
        ),
        Case("resilient Bulkhead.call", _setup(lambda: ours(target))),
        Case(
            "resilient Bulkhead.call (max_wait)",
            _setup(lambda: ours(target, max_wait=5.0, max_queue=TASKS)),
        ),
        Case("resilient @Bulkhead", _setup(lambda: ours_decorated(target))),
    ]
    if with_peers:
        cases += [
            Case("hyx bulkhead", _setup(lambda: hyx_call(target))),
            Case("pyresilience (max_wait=0)", _setup(lambda: pyresilience_call(target, 0.0))),
            Case("pyresilience (max_wait=5)", _setup(lambda: pyresilience_call(target, 5.0))),
            Case("aioresilience Bulkhead", _setup(lambda: aioresilience_call(target, None))),
            Case(
                "aioresilience Bulkhead (timeout)",
                _setup(lambda: aioresilience_call(target, 5.0)),
            ),
        ]
    return cases


def trio_overhead_cases() -> list[Case]:
    return [
        Case("trio.Semaphore", _setup(lambda: semaphore_call(trio.Semaphore(LIMIT), target))),
        Case("anyio.Semaphore", _setup(lambda: semaphore_call(anyio.Semaphore(LIMIT), target))),
        Case(
            "anyio.Semaphore(fast_acquire)",
            _setup(lambda: semaphore_call(anyio.Semaphore(LIMIT, fast_acquire=True), target)),
        ),
        Case("resilient Bulkhead.call", _setup(lambda: ours(target))),
        Case(
            "resilient Bulkhead.call (max_wait)",
            _setup(lambda: ours(target, max_wait=5.0, max_queue=TASKS)),
        ),
        Case("resilient @Bulkhead", _setup(lambda: ours_decorated(target))),
    ]


def run_cases_on_trio(cases: list[Case], *, n: int, repeats: int, warmup: int) -> list[Result]:
    """The harness's rounds on a trio loop (its timing loop is backend-neutral)."""
    import _harness

    return trio.run(_harness._run, cases, n, repeats, warmup)


# --- 2. contended throughput ------------------------------------------------------


class Probe:
    """The work each task does inside its permit: one loop turn, counted."""

    def __init__(self, sleep0: Callable[[], Awaitable[None]]) -> None:
        self.sleep0 = sleep0
        self.running = 0
        self.peak = 0
        self.done = 0

    async def work(self) -> None:
        self.running += 1
        if self.running > self.peak:
            self.peak = self.running
        await self.sleep0()
        self.running -= 1
        self.done += 1


async def _asyncio_sleep0() -> None:
    await asyncio.sleep(0)


async def _trio_sleep0() -> None:
    await trio.lowlevel.checkpoint()


# name -> (needs a limit check?, factory building the call around probe.work)
Contender = tuple[bool, Callable[[Call], Call]]


def asyncio_contenders(with_peers: bool) -> dict[str, Contender]:
    contenders: dict[str, Contender] = {
        "no limit (spawn + one turn)": (False, lambda fn: fn),
        "asyncio.Semaphore": (True, lambda fn: semaphore_call(asyncio.Semaphore(LIMIT), fn)),
        "anyio.Semaphore": (True, lambda fn: semaphore_call(anyio.Semaphore(LIMIT), fn)),
        "resilient Bulkhead": (True, lambda fn: ours(fn)),
        "resilient Bulkhead (max_wait=5)": (True, lambda fn: ours(fn, max_wait=5.0)),
    }
    if with_peers:
        contenders |= {
            "hyx bulkhead": (True, hyx_call),
            "pyresilience (max_wait=5)": (True, lambda fn: pyresilience_call(fn, 5.0)),
            "aioresilience Bulkhead": (True, lambda fn: aioresilience_call(fn, None)),
            "aioresilience Bulkhead (timeout=5)": (True, lambda fn: aioresilience_call(fn, 5.0)),
        }
    return contenders


def trio_contenders() -> dict[str, Contender]:
    return {
        "no limit (spawn + one turn)": (False, lambda fn: fn),
        "trio.Semaphore": (True, lambda fn: semaphore_call(trio.Semaphore(LIMIT), fn)),
        "anyio.Semaphore": (True, lambda fn: semaphore_call(anyio.Semaphore(LIMIT), fn)),
        "resilient Bulkhead": (True, lambda fn: ours(fn)),
        "resilient Bulkhead (max_wait=5)": (True, lambda fn: ours(fn, max_wait=5.0)),
    }


async def _asyncio_batch(calls: Call) -> None:
    async with asyncio.TaskGroup() as tg:
        for _ in range(TASKS):
            tg.create_task(calls())


async def _trio_batch(calls: Call) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(TASKS):
            nursery.start_soon(calls)


async def _contended(
    contenders: dict[str, Contender],
    batch: Callable[[Call], Awaitable[None]],
    sleep0: Callable[[], Awaitable[None]],
    rounds: int,
    warmup: int,
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    rng = random.Random(1234)
    for round_ in range(warmup + rounds):
        rng.shuffle(order)
        for name in order:
            limited, make = contenders[name]
            probe = Probe(sleep0)
            call = make(probe.work)
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                await batch(call)
                elapsed = time.perf_counter() - start
            finally:
                gc.enable()
            if probe.done != TASKS or (limited and probe.peak > LIMIT):
                raise RuntimeError(f"{name}: {probe.done} done, peak {probe.peak}")
            if round_ >= warmup:
                samples[name].append(elapsed)
    return samples


def print_contended(title: str, samples: dict[str, list[float]], baseline: str) -> None:
    base = statistics.median(samples[baseline])
    print(f"\n{title}")
    width = max(len(name) for name in samples)
    header = f"{'case':<{width}}  {'total':>9}  {'IQR':>17}  {'x ' + baseline:>8}"
    print(header)
    print("-" * len(header))
    for name, s in samples.items():
        q1, _, q3 = statistics.quantiles(s, n=4) if len(s) > 1 else (s[0], s[0], s[0])
        med = statistics.median(s)
        spread = f"{q1 * 1e3:.1f}-{q3 * 1e3:.1f}ms"
        print(f"{name:<{width}}  {med * 1e3:>7.1f}ms  {spread:>17}  {med / base:>7.2f}x")


# --- summary ------------------------------------------------------------------


def print_ratios(
    title: str, pairs: list[tuple[str, str]], ratio: Callable[[str, str], float]
) -> None:
    """Ours over another contender, from the same run (below 1.00: ours is faster)."""
    print(f"\n{title}")
    for mine, other in pairs:
        print(f"  {mine} / {other}: {ratio(mine, other):.2f}")


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    """Each of our variants against every contender that is not ours."""
    mine = [n for n in names if n.startswith("resilient")]
    others = [n for n in names if not n.startswith("resilient")]
    return [(m, o) for m in mine for o in others]


def overhead_ratio(results: list[Result]) -> Callable[[str, str], float]:
    """Per-call ratio of two cases, each taken as its median ratio to the paired bare await."""
    by_name = {r.name: r.ratio for r in results}
    return lambda a, b: by_name[a] / by_name[b]


def batch_ratio(samples: dict[str, list[float]]) -> Callable[[str, str], float]:
    """Median over rounds of the two totals' ratio (each round times both, back to back)."""
    return lambda a, b: statistics.median(
        x / y for x, y in zip(samples[a], samples[b], strict=True)
    )


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    with_peers = _peers_installed()
    rounds, warmup = (3, 1) if args.quick else (7, 1)

    aio = run_cases(
        asyncio_overhead_cases(with_peers), n=args.n, repeats=args.repeats, warmup=args.warmup
    )
    print_table("Uncontended overhead per call, asyncio (one run)", aio)
    tri = run_cases_on_trio(
        trio_overhead_cases(), n=args.n, repeats=args.repeats, warmup=args.warmup
    )
    print_table("Uncontended overhead per call, trio (one run)", tri)

    aio_batch = asyncio.run(
        _contended(asyncio_contenders(with_peers), _asyncio_batch, _asyncio_sleep0, rounds, warmup)
    )
    print_contended(
        f"{TASKS:,} tasks through a bulkhead of {LIMIT}, asyncio (one run)",
        aio_batch,
        "asyncio.Semaphore",
    )
    tri_batch = trio.run(_contended, trio_contenders(), _trio_batch, _trio_sleep0, rounds, warmup)
    print_contended(
        f"{TASKS:,} tasks through a bulkhead of {LIMIT}, trio (one run)",
        tri_batch,
        "trio.Semaphore",
    )

    print_ratios(
        "Ratios, uncontended, asyncio (per call; target: <= 1.5 vs a bare semaphore)",
        _pairs([r.name for r in aio]),
        overhead_ratio(aio),
    )
    print_ratios("Ratios, uncontended, trio", _pairs([r.name for r in tri]), overhead_ratio(tri))
    print_ratios(
        "Ratios, contended, asyncio (total time)", _pairs(list(aio_batch)), batch_ratio(aio_batch)
    )
    print_ratios(
        "Ratios, contended, trio (total time)", _pairs(list(tri_batch)), batch_ratio(tri_batch)
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
