"""The six cases of the benchmark, run side by side; :func:`run_all` returns every figure.

1. success-path overhead per call, per feature (retry, breaker, bulkhead,
   timeout, fallback, the four stacked);
2. the cost of a rejection by an open breaker;
3. the retry machinery on a call that fails twice, then succeeds (zero waits);
4. 10,000 concurrent tasks × 10 calls each through breaker + bulkhead(100);
5. memory per breaker instance (10,000 instances, tracemalloc, each kind in
   a fresh interpreter);
6. ours on asyncio, uvloop and trio.

Cases 1-3 are one harness run (``_harness.py``: calibrated loops, warm-up,
shuffled rounds, each timing paired with a bare ``await`` taken just before
it), so every ratio between two contenders comes from the same run. Case 6
is one such run per backend. Case 4 times whole batches, every contender
once per round in a shuffled order, and reports each one's time over the
bare run's in the same round. The "components" and the profile break our
own figures down (see the report's last section).
"""

from __future__ import annotations

import asyncio
import cProfile
import dataclasses
import gc
import inspect
import io
import os
import platform
import pstats
import random
import re
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from typing import Any

from resilient import CircuitBreaker, CountWindow, TimeWindow
from resilient._policy import SharedContext, get_context, reset_context, set_context
from resilient._time import now

from . import _harness
from ._harness import Case, Result
from .contenders import (
    LIMIT,
    LONG,
    TRIP,
    Boom,
    Call,
    Contender,
    Counter,
    Fn,
    breaker_bulkhead_contenders,
    breaker_contenders,
    floor_fallback,
    floor_retry,
    floor_semaphore,
    floor_stack,
    floor_timeout,
    missing_peers,
    ours_breaker,
    ours_bulkhead,
    ours_fallback,
    ours_retry,
    ours_stack,
    ours_timeout,
    retry_contenders,
    success_path_contenders,
)

TASKS = 10_000
CALLS_PER_TASK = 10
MEMORY_INSTANCES = 10_000


@dataclass
class Settings:
    """How long to measure: ``full()`` (about 4 minutes here) or ``quick()`` (under one)."""

    loop_time: float  # seconds per timed loop (calls per loop calibrated to it)
    repeats: int  # rounds kept
    warmup: int  # rounds thrown away
    crowd_rounds: int  # case 4 rounds kept
    crowd_warmup: int
    profile_calls: int

    @classmethod
    def full(cls) -> Settings:
        return cls(0.02, 15, 2, 5, 1, 100_000)

    @classmethod
    def quick(cls) -> Settings:
        return cls(0.005, 4, 1, 2, 0, 20_000)


@dataclass
class Row:
    """One contender's figures in one case (times in seconds per call)."""

    case: str
    contender: Contender
    result: Result

    @property
    def ratio(self) -> float:
        return self.result.ratio


@dataclass
class CrowdRow:
    """Case 4: one contender's batch time, and its time over the bare run's (same round)."""

    contender: Contender
    median: float
    q1: float
    q3: float
    ratio: float


@dataclass
class MemoryRow:
    library: str
    label: str
    kind: str
    bytes_per_instance: float


@dataclass
class Figures:
    """Everything the report shows."""

    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)  # cases 1-3
    bare: Result | None = None
    crowd: list[CrowdRow] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    backends: dict[str, list[Row]] = field(default_factory=dict)
    backend_bare: dict[str, Result] = field(default_factory=dict)
    components: list[Row] = field(default_factory=list)
    profile: list[tuple[str, float, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def case(self, name: str) -> list[Row]:
        return [r for r in self.rows if r.case == name]

    def portable(self) -> Figures:
        """A copy that pickles: the contenders without their (unpicklable) wrappers."""

        def strip(c: Contender) -> Contender:
            return dataclasses.replace(c, wrap=_plain)

        def rows(rs: list[Row]) -> list[Row]:
            return [Row(r.case, strip(r.contender), r.result) for r in rs]

        return dataclasses.replace(
            self,
            rows=rows(self.rows),
            crowd=[dataclasses.replace(r, contender=strip(r.contender)) for r in self.crowd],
            backends={b: rows(rs) for b, rs in self.backends.items()},
            components=rows(self.components),
        )


def _plain(fn: Fn) -> Call:
    return fn


async def target() -> int:
    """The trivial call every contender protects (the harness's bare await calls it too)."""
    return 1


def fails_twice() -> Fn:
    """A call that raises ``Boom`` twice, then returns: every third attempt succeeds."""
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls % 3:
            raise Boom
        return 1

    return flaky


# -- the machine ----------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    libraries = [
        "resilient-policies",
        "anyio",
        "trio",
        "uvloop",
        "tenacity",
        "stamina",
        "backoff",
        "aiobreaker",
        "purgatory",
        "circuitbreaker",
        "pybreaker",
        "tornado",
        "hyx",
        "pyresilience",
        "aioresilience",
        "matplotlib",
    ]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": {name: _version(name) for name in libraries},
        "load": load,
        "missing": missing_peers(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


# -- cases 1-3: one harness run ------------------------------------------------------------


def _wrapped(c: Contender, make: Callable[[], Fn]) -> Callable[[], Awaitable[Call]]:
    async def setup() -> Call:
        return c.wrap(make())

    return setup


def _tripped(c: Contender) -> Callable[[], Awaitable[Call]]:
    """A setup that opens the contender's breaker with ``TRIP`` failures, then calls through it."""

    async def setup() -> Call:
        failing = True

        async def switch() -> int:
            if failing:
                raise Boom
            return 1

        call = c.wrap(switch)
        for _ in range(TRIP + 1):
            try:  # noqa: SIM105 (plain, as the rest)
                await call()
            except Exception:
                pass
        failing = False
        return call

    return setup


def cases_1_to_3() -> tuple[list[Case], dict[str, tuple[str, Contender]]]:
    cases: list[Case] = []
    who: dict[str, tuple[str, Contender]] = {}

    def add(case: str, c: Contender, h: Case) -> None:
        cases.append(h)
        who[h.name] = (case, c)

    for c in success_path_contenders():
        add("success", c, Case(f"1 {c.name}", _wrapped(c, lambda: target), note=c.note))
    for c in breaker_contenders():
        if c.open_error is None:  # a row of the success path only
            continue
        add("open", c, Case(f"2 {c.name}", _tripped(c), expect=c.open_error, note=c.note))
    for c in retry_contenders():
        add("fails twice", c, Case(f"3 {c.name}", _wrapped(c, fails_twice), note=c.note))
    return cases, who


async def _run_cases(cases: list[Case], s: Settings) -> list[Result]:
    return await _harness._run(cases, None, s.repeats, s.warmup, s.loop_time)


def run_cases_1_to_3(figures: Figures, s: Settings) -> None:
    cases, who = cases_1_to_3()
    results = asyncio.run(_run_cases(cases, s))
    for r in results:
        if r.name == "bare await":
            figures.bare = r
            continue
        case, c = who[r.name]
        figures.rows.append(Row(case, c, r))


# -- case 4: 10,000 tasks × 10 calls -------------------------------------------------------


class Probe:
    """The work inside each call: one loop turn, with the calls in flight counted."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.done = 0

    async def work(self) -> int:
        self.running += 1
        if self.running > self.peak:
            self.peak = self.running
        await asyncio.sleep(0)
        self.running -= 1
        self.done += 1
        return 1


async def _worker(call: Call, n: int) -> None:
    for _ in range(n):
        await call()


async def _crowd(s: Settings) -> list[CrowdRow]:
    contenders = breaker_bulkhead_contenders()
    bare = contenders[0]
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    ratios: dict[str, list[float]] = {c.name: [] for c in contenders}
    rng = random.Random(1234)
    order = list(contenders)
    for round_ in range(s.crowd_warmup + s.crowd_rounds):
        rng.shuffle(order)
        times: dict[str, float] = {}
        for c in order:
            probe = Probe()
            call = c.wrap(probe.work)
            gc.collect()
            gc.disable()
            try:
                start = time.thread_time()  # CPU time, as the harness (see there)
                async with asyncio.TaskGroup() as tg:
                    for _ in range(TASKS):
                        tg.create_task(_worker(call, CALLS_PER_TASK))
                elapsed = time.thread_time() - start
            finally:
                gc.enable()
            limited = c is not bare
            if probe.done != TASKS * CALLS_PER_TASK or (limited and probe.peak > LIMIT):
                raise RuntimeError(f"{c.name}: {probe.done} calls done, {probe.peak} at once")
            times[c.name] = elapsed
            await asyncio.sleep(0)
        if round_ >= s.crowd_warmup:
            for name, t in times.items():
                samples[name].append(t)
                ratios[name].append(t / times[bare.name])
    rows = []
    for c in contenders:
        t = samples[c.name]
        q1, _, q3 = statistics.quantiles(t, n=4) if len(t) > 1 else (t[0], t[0], t[0])
        rows.append(CrowdRow(c, statistics.median(t), q1, q3, statistics.median(ratios[c.name])))
    return rows


def run_case_4(figures: Figures, s: Settings) -> None:
    figures.crowd = asyncio.run(_crowd(s))


# -- case 5: memory per breaker -----------------------------------------------------------


async def _bytes_per_instance(build: Callable[[str], Any], n: int) -> float:
    """Bytes allocated per instance, over ``n`` instances kept alive (names made beforehand)."""
    names = [f"breaker-{i}" for i in range(n)]
    keep: list[Any] = [None] * n
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            made = build(names[i])
            if inspect.isawaitable(made):
                made = await made
            keep[i] = made
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return (after - before) / n


def memory_builders() -> list[tuple[str, str, str, Callable[[str], Any]]]:
    rows: list[tuple[str, str, str, Callable[[str], Any]]] = [
        ("resilient", "resilient CountWindow(100) (default)", "ours", lambda n: CircuitBreaker(n)),
        (
            "resilient",
            "resilient CountWindow(10)",
            "ours",
            lambda n: CircuitBreaker(n, window=CountWindow(10)),
        ),
        (
            "resilient",
            "resilient TimeWindow(60)",
            "ours",
            lambda n: CircuitBreaker(n, window=TimeWindow(60.0)),
        ),
        ("floor", "consecutive-failure counter", "floor", lambda n: Counter()),
    ]
    try:
        import aiobreaker

        rows.append(
            (
                "aiobreaker",
                "aiobreaker",
                "peer",
                lambda n: aiobreaker.CircuitBreaker(
                    fail_max=TRIP, timeout_duration=timedelta(seconds=LONG), name=n
                ),
            )
        )
    except ImportError:
        pass
    try:
        import purgatory

        factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=TRIP, default_ttl=LONG)
        rows.append(("purgatory", "purgatory (one factory)", "peer", factory.get_breaker))
    except ImportError:
        pass
    try:
        import circuitbreaker

        rows.append(
            (
                "circuitbreaker",
                "circuitbreaker",
                "peer",
                lambda n: circuitbreaker.CircuitBreaker(
                    failure_threshold=TRIP, recovery_timeout=LONG, name=n
                ),
            )
        )
    except ImportError:
        pass
    try:
        import pybreaker

        rows.append(
            (
                "pybreaker",
                "pybreaker",
                "peer",
                lambda n: pybreaker.CircuitBreaker(fail_max=TRIP, reset_timeout=LONG, name=n),
            )
        )
    except ImportError:
        pass
    try:
        from hyx.circuitbreaker import consecutive_breaker

        rows.append(
            (
                "hyx",
                "hyx consecutive_breaker",
                "peer",
                lambda n: consecutive_breaker(failure_threshold=TRIP, recovery_time_secs=LONG),
            )
        )
    except ImportError:
        pass
    try:
        import pyresilience

        config = pyresilience.CircuitBreakerConfig(failure_threshold=TRIP, recovery_timeout=LONG)
        rows.append(
            (
                "pyresilience",
                "pyresilience CircuitBreaker",
                "peer",
                lambda n: pyresilience.CircuitBreaker(config),
            )
        )
    except ImportError:
        pass
    try:
        import aioresilience

        cfg = aioresilience.CircuitConfig(failure_threshold=TRIP, recovery_timeout=LONG)
        rows.append(
            (
                "aioresilience",
                "aioresilience CircuitBreaker",
                "peer",
                lambda n: aioresilience.CircuitBreaker(name=n, config=cfg),
            )
        )
    except ImportError:
        pass
    return rows


def _measure_memory_row(index: int) -> float:
    """Bytes per instance for ``memory_builders()[index]`` (run in a fresh interpreter)."""
    build = memory_builders()[index][3]
    return asyncio.run(_bytes_per_instance(build, MEMORY_INSTANCES))


def run_case_5(figures: Figures) -> None:
    """Each kind of breaker in a fresh interpreter: registries start empty, as in a new process."""
    import multiprocessing

    rows = memory_builders()
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1, maxtasksperchild=1) as pool:
        sizes = pool.map(_measure_memory_row, range(len(rows)), chunksize=1)
    figures.memory = [
        MemoryRow(library, label, kind, size)
        for (library, label, kind, _), size in zip(rows, sizes, strict=True)
    ]


# -- case 6: backends ------------------------------------------------------------------------


def backend_cases(backend: str) -> tuple[list[Case], dict[str, tuple[str, Contender]]]:
    """Ours (every policy, decorated) and the floors native to ``backend``."""
    if backend == "trio":
        import trio

        def semaphore(fn: Fn) -> Call:
            return floor_semaphore(fn, trio.Semaphore(LIMIT))

        def timeout(fn: Fn) -> Call:
            async def timed() -> Any:
                with trio.fail_after(30.0):
                    return await fn()

            return timed

        floors = [
            ("retry", "try/except loop", floor_retry),
            ("breaker", "consecutive-failure counter", lambda fn: Counter()(fn)),
            ("bulkhead", "trio.Semaphore", semaphore),
            ("timeout", "trio.fail_after", timeout),
            ("fallback", "try/except", floor_fallback),
        ]
    else:
        floors = [
            ("retry", "try/except loop", floor_retry),
            ("breaker", "consecutive-failure counter", lambda fn: Counter()(fn)),
            ("bulkhead", "asyncio.Semaphore", floor_semaphore),
            ("timeout", "asyncio.timeout", floor_timeout),
            ("fallback", "try/except", floor_fallback),
            ("stack", "the four floors stacked", floor_stack),
        ]
    ours: list[tuple[str, str, Callable[[Fn], Call]]] = [
        ("retry", "resilient @Retry", lambda fn: ours_retry()(fn)),
        ("breaker", "resilient CountWindow(100)", lambda fn: ours_breaker("count")(fn)),
        ("breaker", "resilient TimeWindow+slow", lambda fn: ours_breaker("time")(fn)),
        ("bulkhead", "resilient @Bulkhead", lambda fn: ours_bulkhead()(fn)),
        ("timeout", "resilient @Timeout", lambda fn: ours_timeout()(fn)),
        ("fallback", "resilient @Fallback", lambda fn: ours_fallback()(fn)),
        ("stack", "resilient Pipeline", lambda fn: ours_stack()(fn)),
        ("stack", "resilient Pipeline + Fallback", lambda fn: ours_stack(True)(fn)),
    ]
    contenders = [Contender(f, "floor", label, wrap, "floor") for f, label, wrap in floors] + [
        Contender(f, "resilient", label, wrap, "ours") for f, label, wrap in ours
    ]
    cases = []
    who = {}
    for c in contenders:
        h = Case(f"6 {backend} {c.name}", _wrapped(c, lambda: target))
        cases.append(h)
        who[h.name] = (backend, c)
    return cases, who


def backends() -> list[str]:
    found = ["asyncio"]
    if _version("uvloop") != "not installed":
        found.append("uvloop")
    found.append("trio")
    return found


def run_case_6(figures: Figures, s: Settings) -> None:
    for backend in backends():
        cases, who = backend_cases(backend)
        if backend == "trio":
            import trio

            results = trio.run(_harness._run, cases, None, s.repeats, s.warmup, s.loop_time)
        elif backend == "uvloop":
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results = runner.run(_run_cases(cases, s))
        else:
            results = asyncio.run(_run_cases(cases, s))
        rows = []
        for r in results:
            if r.name == "bare await":
                figures.backend_bare[backend] = r
                continue
            rows.append(Row(backend, who[r.name][1], r))
        figures.backends[backend] = rows


# -- where our cost goes: components and a profile -------------------------------------------


def _frame(fn: Fn) -> Fn:
    """A decorator's bare minimum: one coroutine frame passing the arguments on."""

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return wrapped


def _frame_clock(fn: Fn) -> Fn:
    """The retry floor plus one read of the loop clock (what a deadline needs)."""

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        start = now()  # noqa: F841 (read, as a retry must)
        attempt = 1
        while True:
            try:
                return await fn(*args, **kwargs)
            except Exception:
                if attempt >= 3:
                    raise
            attempt += 1

    return wrapped


def _frame_clock_context(fn: Fn) -> Fn:
    """The above plus the call context: a ContextVar get, set and reset (of a prebuilt one).

    Through the variable's methods bound once, as the policies call them: a method
    call on an imported ``ContextVar`` builds a bound method each time (CPython 3.11).
    """
    shared = SharedContext(("retry:bench",), 1)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = None
        if get_context() is None:
            token = set_context(shared)
        try:
            start = now()  # noqa: F841
            attempt = 1
            while True:
                try:
                    return await fn(*args, **kwargs)
                except Exception:
                    if attempt >= 3:
                        raise
                attempt += 1
        finally:
            if token is not None:
                reset_context(token)

    return wrapped


def _timer_only(fn: Fn) -> Fn:
    """A wrapper frame plus one loop timer scheduled and cancelled (no cancellation logic)."""

    def noop() -> None:
        pass

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        handle = loop.call_at(loop.time() + 30.0, noop)
        try:
            return await fn(*args, **kwargs)
        finally:
            handle.cancel()

    return wrapped


def component_contenders() -> list[Contender]:
    f = "components"
    return [
        Contender(f, "floor", "retry: a wrapper frame", _frame, "floor"),
        Contender(f, "floor", "retry: + try/except loop (the floor)", floor_retry, "floor"),
        Contender(f, "floor", "retry: + a clock read", _frame_clock, "floor"),
        Contender(f, "floor", "retry: + the call context", _frame_clock_context, "floor"),
        Contender(f, "resilient", "retry: resilient @Retry", lambda fn: ours_retry()(fn), "ours"),
        Contender(f, "floor", "timeout: a wrapper frame + a loop timer", _timer_only, "floor"),
        Contender(
            f, "resilient", "timeout: resilient @Timeout", lambda fn: ours_timeout()(fn), "ours"
        ),
        Contender(f, "floor", "timeout: asyncio.timeout", floor_timeout, "floor"),
    ]


def run_components(figures: Figures, s: Settings) -> None:
    contenders = component_contenders()
    cases = [Case(c.name, _wrapped(c, lambda: target)) for c in contenders]
    by_name = {c.name: c for c in contenders}
    for r in asyncio.run(_run_cases(cases, s)):
        if r.name != "bare await":
            figures.components.append(Row("components", by_name[r.name], r))


def run_profile(figures: Figures, s: Settings) -> None:
    """cProfile of ours, the Pipeline with a Fallback, decorated; share of time per function."""
    n = s.profile_calls

    async def main() -> None:
        call = ours_stack(fallback=True)(target)
        for i in range(n):
            await call()
            if i % 500 == 0:
                # Let the loop run now and then, as an application's would: it
                # drops the cancelled timeout timers (else the heap they pile
                # up in makes every allocation pay for garbage collection).
                await asyncio.sleep(0)

    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(main())
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    total = 0.0
    for (filename, line, name), (_cc, ncalls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        where = re.split(r"/site-packages/|/src/|/lib/python3\.\d+/", filename)[-1]
        rows.append((f"{where}:{line}({name})", ncalls / n, tottime))
    rows.sort(key=lambda row: row[2], reverse=True)
    figures.profile = [(label, per_call, t / total) for label, per_call, t in rows[:14]]


# -- everything ----------------------------------------------------------------------------


def run_all(s: Settings, cases: set[int], log: Callable[[str], None] = print) -> Figures:
    figures = Figures(meta=machine())
    steps: list[tuple[str, int, Callable[[], None]]] = [
        ("cases 1-3 (per call, one run)", 1, lambda: run_cases_1_to_3(figures, s)),
        (f"case 4 ({TASKS:,} tasks × {CALLS_PER_TASK} calls)", 4, lambda: run_case_4(figures, s)),
        (f"case 5 (memory, {MEMORY_INSTANCES:,} breakers each)", 5, lambda: run_case_5(figures)),
        ("case 6 (backends)", 6, lambda: run_case_6(figures, s)),
        ("components and profile", 7, lambda: run_components(figures, s)),
        ("profile", 7, lambda: run_profile(figures, s)),
    ]
    for title, number, step in steps:
        if number == 1 and not cases & {1, 2, 3}:
            continue
        if number != 1 and number not in cases:
            continue
        log(f"running {title}...")
        start = time.perf_counter()
        step()
        figures.seconds[title] = time.perf_counter() - start
        log(f"  done in {figures.seconds[title]:.0f} s")
        sys.stdout.flush()
    return figures


__all__ = ["Figures", "Settings", "run_all"]
