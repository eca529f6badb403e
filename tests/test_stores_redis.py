"""RedisStore against a real Redis: processes sharing a breaker, the fleet's trial cap,
an outage and its recovery, keys and TTLs.

Redis comes from ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); without
one the tests skip with the reason, except under ``CI=true``, where they fail.
The outage test starts (and kills) a ``redis-server`` of its own on a free
port. These tests wait for real Redis I/O, so they run in real time, with
short intervals; each test uses its own key prefix and deletes its keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from resilient import CircuitBreaker, CircuitOpenError, CircuitState
from resilient.observe.snapshot import read_policy
from resilient.testing import run

redis = pytest.importorskip("redis")
import redis.asyncio as aioredis  # noqa: E402

from resilient.stores.redis import RedisStore  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
OPEN, CLOSED = CircuitState.OPEN, CircuitState.CLOSED


class Boom(Exception):
    pass


async def boom() -> None:
    raise Boom


async def ok() -> str:
    return "ok"


def _require_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no Redis answers at {url}: {exc!r}")
        pytest.skip(f"no Redis answers at {url} (set REDIS_URL): {exc!r}")
    finally:
        client.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique key prefix on REDIS_URL's Redis; its keys are deleted afterwards."""
    _require_redis(REDIS_URL)
    name = f"resilient-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        keys = list(client.scan_iter(match=f"{name}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def client(url: str = REDIS_URL) -> Any:
    # from_url sets no retries; explicit timeouts, as the docs advise.
    return aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


# -- several processes ---------------------------------------------------------------

# One process of the fleet: reads commands on stdin, answers one line each.
WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import redis.asyncio as aioredis
    from resilient import CircuitBreaker, CircuitOpenError
    from resilient.stores.redis import RedisStore

    url, prefix, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    class Boom(Exception):
        pass

    async def boom():
        raise Boom

    ran = 0

    async def trial():
        global ran
        ran += 1
        await asyncio.sleep(1.0)

    async def attempt(breaker):
        try:
            await breaker.call(trial)
        except CircuitOpenError:
            pass

    async def main():
        loop = asyncio.get_running_loop()
        client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        async with RedisStore(client, prefix=prefix, sync_interval=0.02) as store:
            breaker = CircuitBreaker("shared", store=store, **options)
            print("ready", flush=True)
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                cmd, *args = line.split()
                if cmd == "fail":  # after a round (as a sync interval would), fail, share
                    await store.sync()
                    for _ in range(int(args[0])):
                        try:
                            await breaker.call(boom)
                        except (Boom, CircuitOpenError):
                            pass
                    await store.sync()
                    print(breaker.state.value, flush=True)
                elif cmd == "wait":  # until the breaker reads this state (or 3 s)
                    deadline = time.monotonic() + 3.0
                    while breaker.state.value != args[0] and time.monotonic() < deadline:
                        await asyncio.sleep(0.005)
                    print(breaker.state.value, flush=True)
                elif cmd == "race":  # at wall time T, start N calls at once
                    await asyncio.sleep(max(0.0, float(args[0]) - time.time()))
                    await asyncio.gather(*(attempt(breaker) for _ in range(int(args[1]))))
                    print(ran, flush=True)
        await client.aclose()

    asyncio.run(main())
    """
)


class Fleet:
    """N worker processes sharing one breaker; ``ask`` sends each a command."""

    def __init__(self, prefix: str, n: int, options: str) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, REDIS_URL, prefix, options],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]
        assert [self._read(p) for p in self.procs] == ["ready"] * n

    @staticmethod
    def _read(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line, f"worker exited ({proc.poll()})"
        return line

    def send(self, i: int, command: str) -> None:
        stdin = self.procs[i].stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()

    def ask(self, i: int, command: str) -> str:
        self.send(i, command)
        return self._read(self.procs[i])

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def fleet(prefix: str) -> Iterator[Callable[[int, str], Fleet]]:
    made: list[Fleet] = []

    def make(n: int, options: str) -> Fleet:
        made.append(Fleet(prefix, n, options))
        return made[-1]

    yield make
    for f in made:
        f.close()


def test_failures_spread_over_three_processes_open_it_for_all(
    fleet: Callable[[int, str], Fleet],
) -> None:
    """3 failures in each of 3 processes reach minimum_calls=9 only together: all open."""
    f = fleet(3, '{"minimum_calls": 9, "open_duration": 30}')
    assert f.ask(0, "fail 3") == "closed"
    assert f.ask(1, "fail 3") == "closed"
    assert f.ask(2, "fail 3") == "open"
    assert [f.ask(i, "wait open") for i in range(3)] == ["open"] * 3


def test_half_open_cap_holds_with_three_processes_racing(
    fleet: Callable[[int, str], Fleet],
) -> None:
    """half_open_max_calls=2: 3 processes starting 4 trial calls each at once run 2 in all;
    their successes close the breaker for every process."""
    options = '"minimum_calls": 1, "open_duration": 0.5, "half_open_max_calls": 2'
    f = fleet(3, "{" + options + ', "half_open_max_duration": 5}')
    assert f.ask(0, "fail 1") == "open"
    assert [f.ask(i, "wait half_open") for i in range(3)] == ["half_open"] * 3
    start = time.time() + 0.2
    for i in range(3):
        f.send(i, f"race {start} 4")
    ran = [int(Fleet._read(p)) for p in f.procs]
    assert sum(ran) == 2, ran
    assert [f.ask(i, "wait closed") for i in range(3)] == ["closed"] * 3  # the trials' verdict


# -- one process, several stores ------------------------------------------------------


async def _until(predicate: Callable[[], bool], seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


@pytest.fixture
def private_redis() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """A redis-server of this test's own on a free port (restartable); killed afterwards."""
    port = _free_port()
    procs = [_redis_server(port)]
    yield port, procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_redis_stopped_mid_test_degrades_and_recovers(
    private_redis: tuple[int, list[subprocess.Popen[bytes]]], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed: no Redis error reaches a caller, breakers run on local state (degraded,
    logged once); restarted: they resynchronise and a trip made meanwhile reaches all."""
    port, procs = private_redis
    url = f"redis://127.0.0.1:{port}/0"

    async def main() -> None:
        a_client, b_client = client(url), client(url)
        opts: dict[str, Any] = {"minimum_calls": 4, "open_duration": 60.0}
        a_store = RedisStore(a_client, prefix="t", sync_interval=0.02, timeout=0.2)
        b_store = RedisStore(b_client, prefix="t", sync_interval=0.02, timeout=0.2)
        a = CircuitBreaker("dep", store=a_store, **opts)
        b = CircuitBreaker("dep", store=b_store, **opts)
        async with a_store, b_store:
            assert a.metrics.store_degraded is False
            procs[0].kill()
            procs[0].wait()
            assert await _until(lambda: a.metrics.store_degraded and b.metrics.store_degraded)
            assert read_policy(a).figures["store_degraded"] == 1.0
            for _ in range(4):  # only the breaker's own errors, never Redis's
                with pytest.raises((Boom, CircuitOpenError)):
                    await a.call(boom)
            assert a.state is OPEN  # on local state alone
            assert await b.call(ok) == "ok"  # b never heard of it
            procs.append(_redis_server(port))
            assert await _until(lambda: not a.metrics.store_degraded)
            assert await _until(lambda: b.state is OPEN)
            with pytest.raises(CircuitOpenError):
                await b.call(ok)
        await a_client.aclose()
        await b_client.aclose()

    with caplog.at_level(logging.WARNING, logger="resilient"):
        asyncio.run(main())
    lost = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
    back = [r for r in caplog.records if "reaches Redis again" in r.getMessage()]
    assert (len(lost), len(back)) == (2, 2)  # once per store, not once per round


def test_keys_carry_the_prefix_a_hash_tag_and_ttls(prefix: str) -> None:
    """A breaker that ran no trials has two keys, <prefix>:{<name>}:state and :windows,
    both with a TTL; the store's one background task ends with its block."""

    async def main() -> None:
        c = client()
        store = RedisStore(c, prefix=prefix, ttl=120.0)
        breaker = CircuitBreaker("payments", store=store)
        async with store:
            await breaker.call(ok)
            await store.sync()
            keys = sorted(k.decode() for k in await c.keys(f"{prefix}:*"))
            assert keys == [f"{prefix}:{{payments}}:state", f"{prefix}:{{payments}}:windows"]
            for key in keys:
                assert 0 < await c.pttl(key) <= 120_000
            members = await c.hgetall(keys[1])
            assert len(members) == 1
            assert next(iter(members.values())).decode().split(":")[1:4] == ["1", "0", "0"]
            assert len(asyncio.all_tasks()) == 2  # this one and the store's background task
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no task outlives the block
        await c.aclose()

    asyncio.run(main())


def test_a_silent_member_stops_counting(prefix: str) -> None:
    """A store that stopped syncing (a dead process) drops out after member_ttl."""

    async def main() -> None:
        c1, c2 = client(), client()
        s1 = RedisStore(c1, prefix=prefix, member_ttl=0.3)
        s2 = RedisStore(c2, prefix=prefix, member_ttl=0.3)
        b1 = CircuitBreaker("dep", store=s1, minimum_calls=100)
        b2 = CircuitBreaker("dep", store=s2, minimum_calls=100)
        async with s1:
            async with s2:
                await b2.call(ok)
                await s2.sync()
                await s1.sync()
                assert b1.metrics.calls == 1
            await asyncio.sleep(0.4)
            await s1.sync()
            assert b1.metrics.calls == 0
        await c1.aclose()
        await c2.aclose()

    asyncio.run(main())


def test_a_round_sent_again_after_a_lost_reply_counts_nothing_twice(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran a round whose reply never arrived (it came after ``timeout``): the round is
    sent again, and the one trial it reports is still one of two (no early verdict)."""
    from resilient.stores import redis as store_module

    async def slow() -> str:
        await asyncio.sleep(30.0)
        return "ok"

    async def main() -> None:
        c1, c2, admin = client(), client(), client()
        # No background rounds in between (a long interval): this test sends each round.
        opts: dict[str, Any] = {"sync_interval": 60.0, "member_ttl": 120.0}
        s1, s2 = RedisStore(c1, prefix=prefix, **opts), RedisStore(c2, prefix=prefix, **opts)
        breaker: dict[str, Any] = {
            "minimum_calls": 1,
            "open_duration": 0.05,
            "half_open_max_calls": 2,
            "half_open_max_duration": 60.0,
        }
        b1 = CircuitBreaker("dep", store=s1, **breaker)
        b2 = CircuitBreaker("dep", store=s2, **breaker)
        state = f"{prefix}:{{dep}}:state"
        async with s1, s2:
            with pytest.raises(Boom):
                await b1.call(boom)
            await s1.sync()
            await s2.sync()
            await asyncio.sleep(0.1)  # the open period ends
            running = asyncio.create_task(b2.call(slow))  # one trial permit, held
            assert await _until(lambda: b2.metrics.calls == 0 and not running.done())
            assert await b1.call(ok) == "ok"  # the other trial, done
            answer = store_module._RedisLink.answer
            dropped: list[Any] = []

            def lose_once(self: Any, token: Any, reply: Any, now: float) -> None:
                if not dropped:
                    dropped.append(reply)  # Redis ran it; the reply is lost
                    return
                answer(self, token, reply, now)

            monkeypatch.setattr(store_module._RedisLink, "answer", lose_once)
            await s1.sync()
            await s1.sync()  # the same report again
            await s1.sync()
            fields = await admin.hgetall(state)
            assert dropped
            assert (fields[b"state"], fields[b"tc"], fields[b"taken"]) == (b"half_open", b"1", b"2")
            assert not running.done()
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            await s2.sync()  # its permit returned: another trial may run
            fields = await admin.hgetall(state)
            assert (fields[b"state"], fields[b"taken"]) == (b"half_open", b"1")
        for c in (c1, c2, admin):
            await c.aclose()

    asyncio.run(main())


def test_rounds_never_overlap_so_the_newest_totals_stay(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sync()`` called while a round is in flight waits for it, then sends its own: an
    older round can neither land in Redis nor be taken after a newer one."""
    gate = asyncio.Event()
    send = RedisStore._send
    hold: list[RedisStore] = []  # the store whose next round is held
    held: list[bool] = []

    async def first_held(self: RedisStore, sent: Any) -> list[Any]:
        if self in hold and not held:
            held.append(True)
            await gate.wait()  # built before b2's calls; sent and answered after them
        return await send(self, sent)

    monkeypatch.setattr(RedisStore, "_send", first_held)

    async def main() -> None:
        c1, c2 = client(), client()
        s1 = RedisStore(c1, prefix=prefix, sync_interval=60.0)
        s2 = RedisStore(c2, prefix=prefix, sync_interval=60.0)
        b1 = CircuitBreaker("dep", store=s1, minimum_calls=100)
        b2 = CircuitBreaker("dep", store=s2, minimum_calls=100)
        async with s1, s2:
            hold.append(s1)
            older = asyncio.create_task(s1.sync())
            assert await _until(lambda: bool(held))
            await b2.call(ok)
            await b2.call(ok)
            await s2.sync()
            newer = asyncio.create_task(s1.sync())
            await asyncio.sleep(0.05)
            assert not newer.done()  # waits for the round in flight
            gate.set()
            assert await older
            assert await newer
            assert b1.metrics.calls == 2  # the newer round's totals, not the older one's 0
        await c1.aclose()
        await c2.aclose()

    asyncio.run(main())


def test_each_round_is_one_round_trip(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round sends one pipeline and nothing else (no SCRIPT EXISTS before it); a server
    that forgot the script (SCRIPT FLUSH) gets it again, and the store stays reachable."""
    from redis.asyncio.connection import Connection

    sends: list[int] = []
    send = Connection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        await send(self, command, check_health)

    async def main() -> None:
        c, admin = client(), client()
        store = RedisStore(c, prefix=prefix, sync_interval=60.0)
        breakers = [CircuitBreaker(f"dep-{i}", store=store) for i in range(3)]
        async with store:
            for breaker in breakers:
                await breaker.call(ok)
            await store.sync()
            monkeypatch.setattr(Connection, "send_packed_command", counted)
            for _ in range(5):
                assert await store.sync()
            assert len(sends) == 5
            await admin.script_flush()
            sends.clear()
            assert await store.sync()  # NOSCRIPT, SCRIPT LOAD, the round again
            assert len(sends) == 3
            assert not breakers[0].metrics.store_degraded
        await c.aclose()
        await admin.aclose()

    asyncio.run(main())


def test_not_running_store_works_locally_on_trio() -> None:
    """On trio a RedisStore cannot start (clear error); its breakers run on local state."""
    store = RedisStore(client(), prefix="never-used")
    breaker = CircuitBreaker("dep", store=store, minimum_calls=1)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="asyncio"):
            await store.start()
        assert breaker.metrics.store_degraded is True
        with pytest.raises(Boom):
            await breaker.call(boom)
        assert breaker.state is OPEN
        await anyio.sleep(60.0)  # virtual time
        assert breaker.state is CircuitState.HALF_OPEN
        assert await breaker.call(ok) == "ok"  # a local trial
        assert breaker.state is CLOSED

    run(main, backend="trio")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prefix": ""}, "prefix must be a non-empty str without braces, got ''"),
        ({"prefix": "a{b}"}, "prefix .* got 'a{b}'"),
        ({"sync_interval": 0}, "sync_interval .* got 0"),
        ({"timeout": -1}, "timeout .* got -1"),
        ({"ttl": float("inf")}, "ttl"),
        ({"member_ttl": 0}, "member_ttl .* got 0"),
        # renewed by every round: they must outlive the gap between rounds
        ({"ttl": 0.01}, r"ttl must be longer than sync_interval \(0.05\) .* got 0.01"),
        ({"ttl": 0.0005, "sync_interval": 0.0001}, r"ttl .* at least 0.001 s, got 0.0005"),
        ({"member_ttl": 0.05}, r"member_ttl must be longer than sync_interval .* got 0.05"),
    ],
)
def test_bad_configuration_raises_value_error(kwargs: dict[str, Any], match: str) -> None:
    """Each bad option raises ValueError naming the argument and the value."""
    with pytest.raises(ValueError, match=match):
        RedisStore(client(), **kwargs)


def test_client_must_be_a_redis_client() -> None:
    """Something that is not a redis.asyncio client is refused at construction."""
    with pytest.raises(ValueError, match=r"client must be a redis\.asyncio\.Redis, got 42"):
        RedisStore(42)  # type: ignore[arg-type]
    sync = redis.Redis()  # the same methods, but its pipeline cannot be awaited
    wanted = r"client must be a redis\.asyncio\.Redis, got a redis\.client\.Redis \(redis-py's sync"
    with pytest.raises(ValueError, match=wanted):
        RedisStore(sync)  # type: ignore[arg-type]
    sync.close()
