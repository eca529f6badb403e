"""A small timing harness shared by the benchmarks (not part of the library).

How a figure is made:

- Every case is a zero-argument coroutine function built by an async setup
  (so a setup can, say, trip a breaker before the timing starts). The
  harness adds the baseline case ``"bare await"``: ``await f()`` on the same
  trivial coroutine function ``target`` the cases wrap.
- One *round* times every case once, each over ``n`` calls in a plain loop
  (``try: await call() except Exception: pass``; a ``try`` costs nothing in
  Python 3.11 when nothing is raised, so the baseline loop is the same loop),
  and each case's timing is paired with a timing of the bare await taken
  right before it. The cases run in a different order each round, so drift
  in the machine's speed spreads evenly over them.
- ``warmup`` rounds are thrown away, then ``repeats`` rounds are kept. A
  case's per-call figure is the median of its per-call times over the kept
  rounds; the spread is the interquartile range.
- ``overhead`` is the median over the rounds of (case minus its paired bare
  await), and ``ratio`` the median of (case over its paired bare await): a
  shared machine's slow phases hit both halves of a pair alike, so these
  stay steady when absolute times do not. Both are comparable across
  machines; absolute times are not.

The garbage collector is disabled during each timed loop (as ``timeit``
does), and a full collection runs once per round, between timed loops (once
per timing would cost more than the timings themselves where a peer keeps a
large heap). Between timed loops the harness yields to the event
loop once (a checkpoint): a timed loop itself never yields, so without that
the timers each ``Timeout`` call schedules and cancels would pile up in
asyncio's timer heap for the whole run (they are dropped only when the loop
runs), growing memory without bound and slowing every later push. Everything
runs on one plain event loop in real time: this is a measurement, not
library code.

The clock is the thread's CPU time (``time.thread_time``, nanosecond
resolution on Linux), not the wall clock: on a shared machine other
processes take the CPU away in the middle of a timed loop, and that time is
not the code's cost. (What they leave behind in the caches still counts.)
Every timed loop is CPU-bound (no I/O, no sleeping), so the two agree on
an idle machine.

``n`` calls per timed loop can be given, or left to calibration (``n=None``):
then each case gets the ``n`` that makes its loop last about ``loop_time``
seconds (between ``min_n`` and ``max_n``), so a 40 µs peer and a 0.1 µs floor
both get timings long enough to trust, in bounded total time. The bare await
paired with each case runs its own calibrated ``n``.

Run a benchmark module with ``python benchmarks/<name>.py``; ``--quick``
makes fewer, shorter rounds for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.lowlevel

__all__ = ["Case", "Result", "parse_args", "print_table", "run_cases", "target"]

Call = Callable[[], Awaitable[Any]]
_clock = time.thread_time  # CPU time of this thread: see the module docstring
Setup = Callable[[], Awaitable[Call]]


async def target() -> int:
    """The trivial coroutine every case wraps (and the bare await calls)."""
    return 1


async def _bare() -> Call:
    return target


@dataclass
class Case:
    """One thing to time: ``setup()`` returns the zero-argument call to time.

    ``expect`` is the exception type each call must raise (``None``: it must
    return); the harness checks one call before timing, so a case that does
    not do what its name says fails loudly instead of reporting a figure.
    """

    name: str
    setup: Setup
    expect: type[BaseException] | None = None
    note: str = ""


@dataclass
class Result:
    """Per-call figures of one case, in seconds (medians over the kept rounds)."""

    name: str
    median: float
    q1: float
    q3: float
    overhead: float
    ratio: float
    note: str = ""
    n: int = 0
    samples: list[float] = field(default_factory=list, repr=False)


async def _time_once(call: Call, n: int) -> float:
    """Seconds per call over ``n`` calls; on asyncio in a task of its own, in a fresh context.

    Every case runs in one task, and some libraries set context variables as
    they run; a context holding many variables makes every later
    ``ContextVar.set`` dearer (the context is an immutable mapping, copied in
    part on each set). A fresh context per timed loop keeps one contender's
    variables from taxing the next.
    """
    loop = asyncio.get_running_loop() if _on_asyncio() else None
    if loop is None:
        return await _timed_loop(call, n)
    return await loop.create_task(_timed_loop(call, n), context=contextvars.Context())


def _on_asyncio() -> bool:
    return asyncio._get_running_loop() is not None


async def _timed_loop(call: Call, n: int) -> float:
    loop = range(n)
    gc.disable()
    try:
        start = _clock()
        for _ in loop:
            try:  # noqa: SIM105 (contextlib.suppress would add its own cost)
                await call()
            except Exception:
                pass
        elapsed = _clock() - start
    finally:
        gc.enable()
    return elapsed / n


async def _calibrate(call: Call, loop_time: float, min_n: int, max_n: int) -> int:
    """Calls per timed loop so that one loop of ``call`` lasts about ``loop_time`` seconds."""
    n = 16
    while True:
        elapsed = await _time_once(call, n) * n
        await anyio.lowlevel.checkpoint()
        if elapsed >= 2e-3 or n >= max_n:
            break
        n *= 4
    per_call = elapsed / n
    return max(min_n, min(max_n, int(loop_time / per_call)))


async def _check(case: Case, call: Call) -> None:
    try:
        await call()
    except Exception as exc:
        if case.expect is None or not isinstance(exc, case.expect):
            raise RuntimeError(
                f"case {case.name!r}: raised {exc!r}, expected {case.expect}"
            ) from exc
        return
    if case.expect is not None:
        raise RuntimeError(f"case {case.name!r}: returned, expected {case.expect.__name__}")


async def _run(
    cases: list[Case],
    n: int | None,
    repeats: int,
    warmup: int,
    loop_time: float = 0.01,
    min_n: int = 200,
    max_n: int = 200_000,
) -> list[Result]:
    bare = Case("bare await", _bare)
    every = [bare, *cases]
    calls = {}
    sizes: dict[str, int] = {}
    for case in every:
        call = await case.setup()
        await _check(case, call)
        calls[case.name] = call
        sizes[case.name] = n or await _calibrate(call, loop_time, min_n, max_n)
    samples: dict[str, list[float]] = {case.name: [] for case in every}
    overheads: dict[str, list[float]] = {case.name: [] for case in every}
    ratios: dict[str, list[float]] = {case.name: [] for case in every}
    rng = random.Random(1234)
    order = list(cases)
    for round_ in range(warmup + repeats):
        rng.shuffle(order)
        gc.collect()
        for case in order:
            base = await _time_once(target, sizes[bare.name])
            t = await _time_once(calls[case.name], sizes[case.name])
            # Let the loop run once: it drops the timers the loop cancelled.
            await anyio.lowlevel.checkpoint()
            if round_ >= warmup:
                samples[bare.name].append(base)
                samples[case.name].append(t)
                overheads[case.name].append(t - base)
                ratios[case.name].append(t / base)
    results = []
    for case in every:
        s = samples[case.name]
        q1, _, q3 = statistics.quantiles(s, n=4) if len(s) > 1 else (s[0], s[0], s[0])
        med = statistics.median(s)
        if case is bare:
            overhead, ratio = 0.0, 1.0
        else:
            overhead = statistics.median(overheads[case.name])
            ratio = statistics.median(ratios[case.name])
        results.append(
            Result(case.name, med, q1, q3, overhead, ratio, case.note, sizes[case.name], s)
        )
    return results


def run_cases(
    cases: list[Case],
    *,
    n: int | None = 20_000,
    repeats: int = 15,
    warmup: int = 2,
    loop_time: float = 0.01,
) -> list[Result]:
    """Time every case (plus the bare await) on a fresh asyncio loop; the bare await first.

    ``n=None`` calibrates the calls per timed loop for each case (see the module docstring).
    """
    return asyncio.run(_run(cases, n, repeats, warmup, loop_time))


def parse_args(description: str) -> argparse.Namespace:
    """``--quick``, ``-n`` calls per round, ``--repeats`` kept rounds, ``--warmup`` rounds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few short rounds (smoke run)")
    parser.add_argument("-n", type=int, default=20_000, help="calls per case per round")
    parser.add_argument("--repeats", type=int, default=15, help="rounds kept")
    parser.add_argument("--warmup", type=int, default=2, help="rounds thrown away")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.warmup = 2_000, 3, 1
    return args


def print_table(title: str, results: list[Result], *, file: Any = None) -> None:
    """A plain-text table: per-call median, spread, overhead above bare await, ratio."""
    out = file or sys.stdout
    print(f"\n{title}", file=out)
    width = max(len(r.name) for r in results)
    header = f"{'case':<{width}}  {'per call':>9}  {'IQR':>15}  {'overhead':>9}  {'x bare':>7}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in results:
        spread = f"{r.q1 * 1e6:.3f}-{r.q3 * 1e6:.3f}"
        line = (
            f"{r.name:<{width}}  {r.median * 1e6:>7.3f}µs  {spread:>15}  "
            f"{r.overhead * 1e6:>7.3f}µs  {r.ratio:>6.2f}x"
        )
        if r.note:
            line += f"  ({r.note})"
        print(line, file=out)
