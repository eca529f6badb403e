"""Shared breaker state: the cost per call of a store, and how fast a trip travels.

Run: ``python benchmarks/bench_redis_store.py`` (needs Redis at ``REDIS_URL``,
default ``redis://127.0.0.1:6379/0``); ``--quick`` for a smoke run,
``--trips N`` propagation samples (default 300), ``--json FILE`` to save.

1. Overhead per call above a bare ``await f()`` (``_harness.py`` says how),
   for a breaker with no store, with a ``MemoryStore`` and with a running
   ``RedisStore``: the success path in CLOSED, and a rejection in OPEN. No
   call waits for Redis; the Redis figure includes sharing the event loop
   with the store's background rounds (one every ``sync_interval``).
2. Propagation delay between two processes: a child process trips the
   breaker (one failure, ``minimum_calls=1``) and notes the wall clock; this
   process polls its own breaker's ``state`` every 0.5 ms and notes when it
   reads OPEN. The child then resets the breaker (a manual, fleet-wide
   switch) and this process waits for CLOSED, then a random pause up to one
   interval, before the next trip. p50, p99 and max over ``--trips`` trips,
   for each ``sync_interval`` measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import redis.asyncio as aioredis
from _harness import Call, Case, Result, _run, print_table, target

from resilient import CircuitBreaker, CircuitOpenError
from resilient.stores import MemoryStore
from resilient.stores.redis import RedisStore

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
LONG = 3600.0


class Boom(Exception):
    pass


async def failing() -> None:
    raise Boom


def _client() -> aioredis.Redis:
    return aioredis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


# -- 1. overhead per call ---------------------------------------------------------------


async def overhead(args: argparse.Namespace, prefix: str) -> tuple[list[Result], list[Result]]:
    clients: list[aioredis.Redis] = []
    stores: list[RedisStore] = []

    async def make(kind: str, opened: bool) -> Call:
        store: Any = None
        if kind == "memory":
            store = MemoryStore()
        elif kind == "redis":
            client = _client()
            clients.append(client)
            store = RedisStore(client, prefix=prefix)
            stores.append(store)
            await store.start()
        breaker = CircuitBreaker(
            f"bench-{kind}-{opened}-{uuid.uuid4().hex[:6]}",
            store=store,
            minimum_calls=1,
            open_duration=LONG,
        )
        if opened:
            with contextlib.suppress(Boom):
                await breaker.call(failing)
        return breaker(target)

    def case(kind: str, opened: bool, note: str = "") -> Case:
        async def setup() -> Call:
            return await make(kind, opened)

        return Case(f"{kind}", setup, CircuitOpenError if opened else None, note)

    kw = {"n": args.n, "repeats": args.repeats, "warmup": args.warmup}
    try:
        closed = await _run(
            [case("no store", False), case("memory", False), case("redis", False)], **kw
        )
        opened = await _run(
            [case("no store", True), case("memory", True), case("redis", True)], **kw
        )
    finally:
        for store in stores:
            await store.aclose()
        for client in clients:
            await client.aclose()
    return closed, opened


# -- 2. propagation between two processes ----------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    import redis.asyncio as aioredis
    from resilient import CircuitBreaker
    from resilient.stores.redis import RedisStore

    url, prefix, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])

    async def failing():
        raise RuntimeError

    async def main():
        loop = asyncio.get_running_loop()
        client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        async with RedisStore(client, prefix=prefix, sync_interval=interval) as store:
            breaker = CircuitBreaker("probe", store=store, minimum_calls=1, open_duration=3600)
            print("ready", flush=True)
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                if line.strip() == "trip":
                    try:
                        await breaker.call(failing)
                    except RuntimeError:
                        pass
                    print(time.time(), flush=True)  # the trip, on the wall clock
                else:
                    breaker.reset()
                    await store.sync()
                    print("reset", flush=True)
        await client.aclose()

    asyncio.run(main())
    """
)


def _spawn(prefix: str, interval: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, REDIS_URL, prefix, str(interval)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def propagation(trips: int, interval: float, prefix: str) -> list[float]:
    """Seconds from the child's trip to this process reading OPEN, per trip."""
    child = _spawn(prefix, interval)
    assert child.stdin is not None
    assert child.stdout is not None
    loop = asyncio.get_running_loop()

    async def ask(command: str) -> str:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write(command + "\n")
        child.stdin.flush()
        return (await loop.run_in_executor(None, child.stdout.readline)).strip()

    client = _client()
    delays: list[float] = []
    try:
        assert (await loop.run_in_executor(None, child.stdout.readline)).strip() == "ready"
        async with RedisStore(client, prefix=prefix, sync_interval=interval) as store:
            breaker = CircuitBreaker("probe", store=store, minimum_calls=1, open_duration=3600)
            rng = random.Random(8)
            for _ in range(trips):
                # A random pause: trips must not fall at one phase of this process's rounds
                # (right after the round that saw the reset, they would wait a whole interval).
                await asyncio.sleep(rng.uniform(0, interval))
                reply = asyncio.ensure_future(ask("trip"))
                # Polling is the point: when does a read of the state first say OPEN?
                while breaker.state.value != "open":  # noqa: ASYNC110
                    await asyncio.sleep(0.0005)
                seen = time.time()
                delays.append(seen - float(await reply))
                assert await ask("reset") == "reset"
                while breaker.state.value != "closed":  # noqa: ASYNC110
                    await asyncio.sleep(0.0005)
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            print("  (the child did not exit within 30 s of its stdin closing: killed)")
        await client.aclose()
    return delays


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {}
    try:
        closed, opened = await overhead(args, prefix)
        print_table("CLOSED: success path, per call", closed)
        print_table("OPEN: rejection, per call (raise + catch included)", opened)
        out["closed"] = [r.__dict__ for r in closed]
        out["open"] = [r.__dict__ for r in opened]
        by = {r.name: r for r in closed}
        print(
            f"\nsuccess path: RedisStore {by['redis'].overhead * 1e6:.3f} µs, MemoryStore "
            f"{by['memory'].overhead * 1e6:.3f} µs, no store {by['no store'].overhead * 1e6:.3f} µs"
        )
        print("\nPropagation of a trip between two processes (wall clock, 0.5 ms polling)")
        for interval in args.intervals:
            delays = await propagation(args.trips, interval, prefix)
            p50, p99 = quantile(delays, 0.5), quantile(delays, 0.99)
            print(
                f"  sync_interval={interval:.3f}s: p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
                f"max {max(delays) * 1e3:.1f} ms, mean {statistics.mean(delays) * 1e3:.1f} ms "
                f"over {len(delays)} trips"
            )
            out[f"propagation_{interval}"] = {"p50": p50, "p99": p99, "samples": delays}
    finally:
        client = _client()
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few short rounds (smoke run)")
    parser.add_argument("-n", type=int, default=20_000, help="calls per case per round")
    parser.add_argument("--repeats", type=int, default=15, help="rounds kept")
    parser.add_argument("--warmup", type=int, default=3, help="rounds thrown away")
    parser.add_argument("--trips", type=int, default=300, help="propagation samples")
    parser.add_argument(
        "--intervals", type=float, nargs="+", default=[0.05, 0.02], help="sync_interval values"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.warmup, args.trips = 2_000, 3, 1, 30
    print(f"Python {sys.version.split()[0]}, Redis at {REDIS_URL}")
    out = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
