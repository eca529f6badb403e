"""Circuit breaker overhead against its peers, measured in one run.

Run: ``python benchmarks/bench_breaker.py`` (peers: ``pip install -e '.[bench]'``);
``--quick`` for a smoke run, ``--profile`` to add a cProfile of resilient's
hot paths, ``--json FILE`` to save the figures.

Two figures per library, each per call and above a bare ``await f()`` timed
in the same run (see ``_harness.py`` for how):

- closed: the success path of a breaker that is CLOSED;
- open: the cost of a rejection by a breaker that is OPEN (the function is
  not called; the figure includes raising and catching the library's error).

Each peer is used through its documented API (decorator where it has one):
aiobreaker (``@CircuitBreaker``), purgatory (``@AsyncCircuitBreakerFactory(...)(name)``),
circuitbreaker (``@circuit(...)``), pybreaker (``call_async``, which runs on
tornado: its only async path). "hand-rolled" is the smallest useful breaker:
a consecutive-failure counter that reads the clock only when open.

Memory per instance is measured with tracemalloc over many instances,
including whatever each library allocates per breaker (registries too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import pstats
import sys
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Call, Case, Result, print_table, run_cases, target
from contenders import Counter, HandRolledOpen

import resilient
from resilient import CircuitBreaker, CircuitOpenError, CountWindow, TimeWindow

TRIP = 5  # failures that open each breaker
LONG = 3600.0  # open this long: the benchmark never sees a half-open breaker


class Boom(Exception):
    pass


async def failing() -> None:
    raise Boom


async def _trip(call_failing: Callable[[], Any]) -> None:
    for _ in range(TRIP + 1):
        with contextlib.suppress(Exception):
            await call_failing()


# -- resilient ------------------------------------------------------------------------


def _ours(window: str, slow: bool) -> CircuitBreaker:
    return CircuitBreaker(
        "bench",
        window=CountWindow(100) if window == "count" else TimeWindow(60.0),
        slow_call_duration=5.0 if slow else None,
        minimum_calls=TRIP,
        open_duration=LONG,
    )


def ours_closed(window: str, slow: bool, via: str = "decorator") -> Callable[[], Any]:
    async def setup() -> Call:
        breaker = _ours(window, slow)
        if via == "call":
            call = breaker.call
            return lambda: call(target)
        return breaker(target)

    return setup


def ours_open(window: str, slow: bool) -> Callable[[], Any]:
    async def setup() -> Call:
        breaker = _ours(window, slow)
        await _trip(lambda: breaker.call(failing))
        return breaker(target)

    return setup


# -- hand-rolled ------------------------------------------------------------------------
#
# The suite's floor (contenders.Counter): a decorator taking *args, **kwargs
# like every other contender, so the comparison is of the same call shape.


async def hand_closed() -> Call:
    return Counter(TRIP, LONG)(target)


async def hand_open() -> Call:
    breaker = Counter(TRIP, LONG)
    await _trip(breaker(failing))
    return breaker(target)


# -- peers ----------------------------------------------------------------------------


def peer_cases() -> tuple[list[Case], list[Case], list[str]]:
    """Closed and open cases for each installed peer; the names of missing ones."""
    closed: list[Case] = []
    opened: list[Case] = []
    missing: list[str] = []

    try:
        import aiobreaker
    except ImportError:
        missing.append("aiobreaker")
    else:

        def aio_breaker() -> Any:
            return aiobreaker.CircuitBreaker(
                fail_max=TRIP, timeout_duration=timedelta(seconds=LONG)
            )

        async def aio_closed() -> Call:
            return aio_breaker()(target)  # type: ignore[no-any-return]

        async def aio_open() -> Call:
            b = aio_breaker()
            await _trip(b(failing))
            return b(target)  # type: ignore[no-any-return]

        closed.append(Case("aiobreaker", aio_closed))
        opened.append(Case("aiobreaker", aio_open, aiobreaker.CircuitBreakerError))

    try:
        import purgatory
        from purgatory.domain.model import OpenedState
    except ImportError:
        missing.append("purgatory")
    else:

        async def pg_closed() -> Call:
            factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=TRIP, default_ttl=LONG)
            return factory("bench-closed")(target)  # type: ignore[no-any-return]

        async def pg_open() -> Call:
            factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=TRIP, default_ttl=LONG)
            await _trip(factory("bench-open")(failing))
            return factory("bench-open")(target)  # type: ignore[no-any-return]

        closed.append(Case("purgatory", pg_closed))
        opened.append(Case("purgatory", pg_open, OpenedState))

    try:
        import circuitbreaker
    except ImportError:
        missing.append("circuitbreaker")
    else:

        def cb_breaker() -> Any:
            return circuitbreaker.circuit(
                failure_threshold=TRIP, recovery_timeout=LONG, expected_exception=Exception
            )

        async def cb_closed() -> Call:
            return cb_breaker()(target)  # type: ignore[no-any-return]

        async def cb_open() -> Call:
            b = cb_breaker()
            await _trip(b(failing))
            return b(target)  # type: ignore[no-any-return]

        closed.append(Case("circuitbreaker", cb_closed))
        opened.append(Case("circuitbreaker", cb_open, circuitbreaker.CircuitBreakerError))

    try:
        import pybreaker
        import tornado  # noqa: F401  (pybreaker's async path needs it)
    except ImportError:
        missing.append("pybreaker (needs tornado for call_async)")
    else:

        def pb_breaker() -> Any:
            return pybreaker.CircuitBreaker(fail_max=TRIP, reset_timeout=LONG)

        async def pb_closed() -> Call:
            b = pb_breaker()
            return lambda: b.call_async(target)

        async def pb_open() -> Call:
            b = pb_breaker()
            await _trip(lambda: b.call_async(failing))
            return lambda: b.call_async(target)

        note = "call_async via tornado"
        closed.append(Case("pybreaker", pb_closed, note=note))
        opened.append(Case("pybreaker", pb_open, pybreaker.CircuitBreakerError, note=note))

    return closed, opened, missing


# -- memory ---------------------------------------------------------------------------


def bytes_per_instance(build: Callable[[], Any], n: int = 2000) -> float:
    """Bytes allocated per instance, over ``n`` instances kept alive in a list."""
    gc.collect()
    tracemalloc.start()
    keep: list[Any] = [None] * n  # allocated before the snapshot: not counted
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        keep[i] = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / n


def memory_table() -> list[tuple[str, float]]:
    rows = [
        ("resilient CountWindow(100) (default)", lambda: CircuitBreaker("m")),
        ("resilient CountWindow(10)", lambda: CircuitBreaker("m", window=CountWindow(10))),
        ("resilient TimeWindow(60)", lambda: CircuitBreaker("m", window=TimeWindow(60.0))),
        ("hand-rolled", lambda: Counter(TRIP, LONG)),
    ]
    try:
        import aiobreaker

        rows.append(("aiobreaker", lambda: aiobreaker.CircuitBreaker(fail_max=TRIP)))
    except ImportError:
        pass
    try:
        import circuitbreaker

        rows.append(("circuitbreaker", lambda: circuitbreaker.CircuitBreaker()))
    except ImportError:
        pass
    try:
        import pybreaker

        rows.append(("pybreaker", lambda: pybreaker.CircuitBreaker()))
    except ImportError:
        pass
    return [(name, bytes_per_instance(build)) for name, build in rows]


# -- profile --------------------------------------------------------------------------


def profile(n: int = 200_000) -> str:
    """cProfile of resilient's closed path (TimeWindow + slow timing) and open path."""

    async def main() -> None:
        closed = await ours_closed("time", True)()
        opened = await ours_open("time", True)()
        for _ in range(n):
            await closed()
        for _ in range(n):
            try:  # noqa: SIM105 (as the harness: no context manager in the loop)
                await opened()
            except CircuitOpenError:
                pass

    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(main())
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
    return out.getvalue()


# -- main -----------------------------------------------------------------------------


def summarize(closed: list[Result], opened: list[Result]) -> list[str]:
    lines = []
    by_c = {r.name: r for r in closed}
    by_o = {r.name: r for r in opened}
    ours_c = by_c["resilient TimeWindow+slow"]
    ours_o = by_o["resilient TimeWindow+slow"]
    hand_c, hand_o = by_c["hand-rolled counter"], by_o["hand-rolled counter"]
    lines.append(
        f"closed overhead, TimeWindow + slow timing: {ours_c.overhead * 1e6:.3f} µs "
        f"(target <= 0.55), {ours_c.ratio / hand_c.ratio:.2f}x the hand-rolled counter "
        f"in total time per call ({ours_c.overhead / hand_c.overhead:.2f}x its overhead)"
    )
    default = by_c["resilient CountWindow(100)"]
    lines.append(
        f"closed overhead, default CountWindow(100): {default.overhead * 1e6:.3f} µs, "
        f"{default.ratio / hand_c.ratio:.2f}x the hand-rolled counter in total time per call "
        f"({default.overhead / hand_c.overhead:.2f}x its overhead)"
    )
    lines.append(
        f"open rejection: {ours_o.overhead * 1e6:.3f} µs above bare await (target <= 0.95), "
        f"{ours_o.overhead / hand_o.overhead:.2f}x the hand-rolled counter's"
    )
    for label, ours, table in (("closed", ours_c, closed), ("open", ours_o, opened)):
        peers = [r for r in table if not r.name.startswith(("resilient", "hand", "bare"))]
        if peers:
            best = min(peers, key=lambda r: r.overhead)
            rel = ", ".join(f"{r.name} {r.overhead / ours.overhead:.1f}x" for r in peers)
            lines.append(
                f"{label}: peers' overhead relative to resilient TimeWindow+slow: {rel}"
                f" (cheapest peer: {best.name})"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few short rounds (smoke run)")
    parser.add_argument("-n", type=int, default=20_000, help="calls per case per round")
    parser.add_argument("--repeats", type=int, default=15, help="rounds kept")
    parser.add_argument("--warmup", type=int, default=3, help="rounds thrown away")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of the hot paths")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # see progress
    if args.quick:
        args.n, args.repeats, args.warmup = 2_000, 3, 1

    peers_closed, peers_open, missing = peer_cases()
    closed_cases = [
        Case("resilient CountWindow(100)", ours_closed("count", False), note="default"),
        Case("resilient TimeWindow+slow", ours_closed("time", True), note="TimeWindow(60), slow"),
        Case("resilient .call()", ours_closed("time", True, "call"), note="TimeWindow+slow"),
        Case("hand-rolled counter", hand_closed),
        *peers_closed,
    ]
    open_cases = [
        Case("resilient TimeWindow+slow", ours_open("time", True), CircuitOpenError),
        Case("resilient CountWindow(100)", ours_open("count", False), CircuitOpenError),
        Case("hand-rolled counter", hand_open, HandRolledOpen),
        *peers_open,
    ]
    kw = {"n": args.n, "repeats": args.repeats, "warmup": args.warmup}
    print(f"Python {sys.version.split()[0]}, resilient {resilient.__version__}")
    closed = run_cases(closed_cases, **kw)
    print_table("CLOSED: success path, per call", closed)
    opened = run_cases(open_cases, **kw)
    print_table("OPEN: rejection, per call (raise + catch included)", opened)
    if missing:
        print(f"\nnot installed, not measured: {', '.join(missing)}")
    print()
    for line in summarize(closed, opened):
        print(line)

    memory = memory_table()
    print("\nMemory per instance (tracemalloc)")
    for name, size in memory:
        print(f"  {name:<38} {size:>7.0f} B")

    if args.profile:
        print("\ncProfile, 200k closed (TimeWindow+slow) then 200k open calls:")
        print(profile())
    if args.json:
        data = {
            "closed": [r.__dict__ | {"samples": r.samples} for r in closed],
            "open": [r.__dict__ | {"samples": r.samples} for r in opened],
            "memory": dict(memory),
        }
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
