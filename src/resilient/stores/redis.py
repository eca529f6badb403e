"""``RedisStore``: breakers in many processes and hosts sharing one state through Redis.

Needs the ``redis`` extra (``redis.asyncio``), and so asyncio: entering the
store on trio raises ``RuntimeError``; a breaker whose store is not running
works on its local state alone (and says so: ``metrics.store_degraded``).

How it talks to Redis (the user guide, ``docs/stores.md``, has the why):

- The breakers never wait for Redis, except for a HALF_OPEN trial's permit.
  Each store runs one background task (``async with store:``) that, every
  ``sync_interval`` seconds and at once after a local transition, sends one
  pipeline with one script call per breaker: the breaker's pending
  transition (compare-and-set), its trial outcomes, its window's totals, and
  back come the fleet's state and the other members' totals, cached on the
  breaker's link until the next round.
- Keys, all of one breaker behind one Redis Cluster hash tag
  (``{name}``), with TTLs: ``<prefix>:{<name>}:state`` (a hash: generation,
  state, open deadline in Redis server milliseconds, open duration, trial
  permits and counts), ``<prefix>:{<name>}:trials`` (a hash: one field per
  member that ran trials, ``gen:calls:failed:slow:released``, its totals for
  that generation's trials) and ``<prefix>:{<name>}:windows`` (a hash: one
  field per member, ``gen:calls:failed:slow:seen_ms``; members not seen for
  ``member_ttl`` are dropped).
- Every report is idempotent: a member sends its totals, never increments,
  so a round that Redis ran but whose reply was lost (it came after
  ``timeout``) and that is sent again counts nothing twice.
- Redis faults (errors, or no answer within ``timeout``) never reach a caller:
  the store is *degraded* (logged once), every breaker works on its local
  state, local transitions wait to be published, and the first round that
  succeeds resynchronises (the fleet's newer state wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import uuid
import weakref
from typing import TYPE_CHECKING, Any, final

import sniffio

from .._time import now as _now
from .._validate import check_seconds
from ..breaker import CircuitState
from ._base import FleetCounts, How, SharedView

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .._window import Window
    from ..breaker import CircuitBreaker

__all__ = ["RedisStore"]

logger = logging.getLogger("resilient")

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN

# Read the state hash, creating a CLOSED state if there is none. A new state's
# generation starts at the server's clock in milliseconds, so generations keep
# rising even after Redis lost its data (a breaker never mistakes a new
# state for one it has seen).
_READ_STATE = """
local S, T = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', S, 'gen', 'state', 'until', 'duration', 'taken', 'tc', 'tf', 'ts')
local dirty = false
local gen, state, till, duration = tonumber(s[1]), s[2], tonumber(s[3]), s[4]
local taken, tc, tf, ts = tonumber(s[5]), tonumber(s[6]), tonumber(s[7]), tonumber(s[8])
if not gen then
  gen, state, till, duration, taken, tc, tf, ts = now, 'closed', 0, '0', 0, 0, 0, 0
  dirty = true
end
local function move(new_state, new_till, new_duration)
  gen = gen + 1
  state, till = new_state, new_till
  if new_duration then duration = new_duration end
  taken, tc, tf, ts = 0, 0, 0, 0
  dirty = true
  redis.call('DEL', T)  -- the members' trial totals were for the old generation
end
"""

_WRITE_STATE = """
if dirty then
  redis.call('HSET', S, 'gen', gen, 'state', state, 'until', till, 'duration', duration,
             'taken', taken, 'tc', tc, 'tf', tf, 'ts', ts)
end
redis.call('PEXPIRE', S, ARGV[1])
local remaining = 0
if state == 'open' then remaining = math.max(0, till - now) end
"""

# KEYS: state, trials, windows. ARGV: ttl_ms, member, member_gen, calls, failed,
# slow, member_ttl_ms, pub_state ('' for none), pub_remaining_ms, pub_duration,
# pub_manual, trial_gen, trial_calls, trial_failed, trial_slow, released (the
# member's totals for the trials of trial_gen), half_open_max_calls,
# failure_threshold, slow_threshold, multiplier, cap (<0: none).
# Returns: gen, state, remaining_ms, duration, others' calls, failed, slow,
# and the generation this member follows now.
_SYNC = (
    _READ_STATE
    + """
local W = KEYS[3]
local me, mine = ARGV[2], tonumber(ARGV[3])
if mine == 0 and state == 'closed' then mine = gen end
-- this member's trial outcomes and returned permits, if still current: its totals
-- for this generation's trials, of which only what is new since the totals last
-- recorded here counts (a round sent again after a lost reply adds nothing)
if tonumber(ARGV[12]) == gen and state == 'half_open' then
  local c, f, sl, r = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
  local pc, pf, ps, pr = 0, 0, 0, 0
  local seen = redis.call('HGET', T, me)
  if seen then
    local g, a, b, d, e = string.match(seen, '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
    if g and tonumber(g) == gen then
      pc, pf, ps, pr = tonumber(a), tonumber(b), tonumber(d), tonumber(e)
    end
  end
  -- totals only grow; an older round arriving late brings nothing new
  c, f, sl, r = math.max(c, pc), math.max(f, pf), math.max(sl, ps), math.max(r, pr)
  if c > pc or r > pr then
    redis.call('HSET', T, me, string.format('%d:%d:%d:%d:%d', gen, c, f, sl, r))
    redis.call('PEXPIRE', T, ARGV[1])
    taken = math.max(0, taken - (r - pr))
    tc, tf, ts = tc + (c - pc), tf + (f - pf), ts + (sl - ps)
    dirty = true
  end
  if tc > 0 and tc >= tonumber(ARGV[17]) then
    if tf / tc >= tonumber(ARGV[18]) or ts / tc >= tonumber(ARGV[19]) then
      local d = tonumber(duration) * tonumber(ARGV[20])
      local cap = tonumber(ARGV[21])
      if cap >= 0 and d > cap then d = cap end
      move('open', now + math.floor(d * 1000), tostring(d))
    else
      move('closed', 0, nil)
    end
  end
end
-- this member's own transition: compare-and-set on the generation it followed
local pub = ARGV[8]
if pub ~= '' then
  local manual = ARGV[11] == '1'
  -- a trip is news to a CLOSED fleet whatever generation it was made in
  if manual or gen == mine or (pub == 'open' and state == 'closed') then
    if manual or not (pub == 'closed' and state == 'closed') then
      if pub == 'open' then
        move('open', now + tonumber(ARGV[9]), ARGV[10])
      else
        move(pub, 0, nil)
      end
    end
    mine = gen
  end
end
"""
    + _WRITE_STATE
    + """
redis.call('HSET', W, me, string.format('%d:%d:%d:%d:%d', mine, ARGV[4], ARGV[5], ARGV[6], now))
redis.call('PEXPIRE', W, ARGV[1])
local oc, of, os = 0, 0, 0
local all = redis.call('HGETALL', W)
for i = 1, #all, 2 do
  if all[i] ~= me then
    local g, c, f, sl, seen = string.match(all[i + 1], '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
    if not g or now - tonumber(seen) > tonumber(ARGV[7]) then
      redis.call('HDEL', W, all[i])
    elseif tonumber(g) == gen then
      oc, of, os = oc + tonumber(c), of + tonumber(f), os + tonumber(sl)
    end
  end
end
return {gen, state, remaining, tostring(duration), oc, of, os, mine}
"""
)

# KEYS: state, trials. ARGV: ttl_ms, member_gen, half_open_max_calls.
# Returns: gen, state, remaining_ms, duration, granted (0/1).
_ACQUIRE = (
    _READ_STATE
    + """
if state == 'open' and gen == tonumber(ARGV[2]) then
  move('half_open', 0, nil)  -- this member's open period is over: the fleet's trials begin
end
local granted = 0
if state == 'half_open' and taken < tonumber(ARGV[3]) then
  taken = taken + 1
  granted = 1
  dirty = true
end
"""
    + _WRITE_STATE
    + """
return {gen, state, remaining, tostring(duration), granted}
"""
)

_ids = itertools.count(1)


@final
class RedisStore:
    """Share breakers' state through Redis: ``CircuitBreaker(name, store=RedisStore(client))``.

    Arguments (keyword-only after ``client``), with their defaults:

    - ``client``: a ``redis.asyncio.Redis``. Set its ``socket_timeout`` and
      ``socket_connect_timeout``; the store bounds each round by ``timeout``
      anyway.
    - ``prefix="resilient"``: the first part of every key (no braces: the
      hash tag is the breaker's name).
    - ``sync_interval=0.05``: seconds between rounds with Redis (a local
      transition starts one at once). The fleet's state reaches a breaker
      within about this long.
    - ``timeout=0.5``: seconds a round (or a trial permit) may take before the
      store counts Redis as unreachable.
    - ``ttl=3600.0``: seconds every key lives after its breaker's last round.
    - ``member_ttl=None``: seconds after which a silent member's totals stop
      counting; ``None``: ``max(2.0, 40 * sync_interval)``.

    Both TTLs must be longer than ``sync_interval`` (rounds renew them).

    Run it with ``async with store:`` (or ``await store.start()`` and
    ``await store.aclose()``) on asyncio: that owns the one background task,
    which never outlives the block. Breakers can be built (and attached)
    before, outside any loop.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "resilient",
        sync_interval: float = 0.05,
        timeout: float = 0.5,
        ttl: float = 3600.0,
        member_ttl: float | None = None,
    ) -> None:
        owner = "RedisStore"
        try:
            from redis.asyncio import Redis, RedisCluster
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise ImportError(
                "RedisStore needs redis-py: pip install 'resilient-policies[redis]'"
            ) from exc
        if not isinstance(client, Redis | RedisCluster):
            got = repr(client)
            kind = type(client)
            if len(got) > 80:  # a client's repr lists its whole connection pool
                got = f"a {kind.__module__}.{kind.__qualname__}"
            if kind.__module__.startswith("redis.") and kind.__name__.endswith("Redis"):
                # The sync client has the same methods, but its pipeline cannot be awaited.
                got += " (redis-py's sync client)"
            raise ValueError(f"{owner}: client must be a redis.asyncio.Redis, got {got}")
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(
                f"{owner}: prefix must be a non-empty str without braces, got {prefix!r}"
            )
        self.client = client
        self.prefix = prefix
        self.sync_interval = check_seconds(owner, "sync_interval", sync_interval)
        self.timeout = check_seconds(owner, "timeout", timeout)
        self.ttl = check_seconds(owner, "ttl", ttl)
        self.member_ttl = (
            max(2.0, 40 * self.sync_interval)
            if member_ttl is None
            else check_seconds(owner, "member_ttl", member_ttl)
        )
        # Both are renewed by every round: shorter than the gap between rounds,
        # keys (or members) would vanish between them and the fleet share nothing.
        for option, value in (("ttl", self.ttl), ("member_ttl", self.member_ttl)):
            if value <= self.sync_interval or value < 0.001:
                raise ValueError(
                    f"{owner}: {option} must be longer than sync_interval "
                    f"({self.sync_interval!r}) and at least 0.001 s, got {value!r}"
                )
        self._sync_script = client.register_script(_SYNC)
        self._sync_sha: str = self._sync_script.sha
        self._acquire_script = client.register_script(_ACQUIRE)
        self._member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._links: weakref.WeakSet[_RedisLink] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._reachable = False  # the last round succeeded
        # One round at a time: a round's request (a member's window totals) is
        # built when it starts, so overlapping rounds (sync() beside the
        # background one) could land in Redis, or be answered, in either order,
        # and an older round's totals overwrite a newer one's.
        self._one_round = asyncio.Lock()
        self._warned = False  # an outage (or not running) has been logged

    # -- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The background task runs (inside ``async with store:``)."""
        return self._task is not None

    @property
    def degraded(self) -> bool:
        """Breakers on this store work on local state: not running, or Redis unreachable."""
        return self._task is None or not self._reachable

    async def start(self) -> None:
        """Sync once, then start the background task (asyncio only)."""
        if sniffio.current_async_library() != "asyncio":
            raise RuntimeError(
                "RedisStore needs asyncio (redis.asyncio is asyncio-only); on trio, use "
                "breakers without a store or with a MemoryStore"
            )
        if self._task is not None:
            raise RuntimeError(f"{self!r} is already running")
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self.sync()

    async def aclose(self) -> None:
        """Stop the background task (and wait for it), after a last round for pending work."""
        task, self._task = self._task, None
        if task is None:
            return
        # The flag too: a client library that swallows a cancellation cannot keep it alive.
        self._stopping = True
        task.cancel()
        # asyncio.wait never raises the task's own CancelledError: only a cancellation
        # of our caller (e.g. an anyio scope's, which the scope recognises) propagates.
        await asyncio.wait([task])
        await self._round(final=True)

    async def __aenter__(self) -> RedisStore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        while not self._stopping:
            # Not asyncio.wait_for: on 3.11 it loses a cancellation that races the wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sync_interval):
                    await wake.wait()
            wake.clear()
            if not self._stopping:
                await self._round()

    def _poke(self) -> None:
        """A local change to publish: start a round now."""
        if self._wake is not None:
            self._wake.set()

    # -- one round ------------------------------------------------------------------

    async def sync(self) -> bool:
        """One round with Redis now (for every live breaker); whether Redis answered.

        A round in flight is let finish first: this one starts after it.
        """
        return await self._round()

    async def _round(self, final: bool = False) -> bool:
        async with self._one_round:
            return await self._round_alone(final)

    async def _round_alone(self, final: bool) -> bool:
        links = [link for link in self._links if link.alive()]
        if not links:
            return self._reachable
        now = _now()
        sent = [link.request(now) for link in links]
        try:
            async with asyncio.timeout(self.timeout):
                replies = await self._send(sent)
        except Exception as exc:  # any Redis fault: fail-static, never the caller's error
            self._fault(exc)
            return False
        now = _now()
        for link, (_, _, token), reply in zip(links, sent, replies, strict=True):
            link.answer(token, reply, now)
        if not self._reachable:
            self._reachable = True
            if self._warned and not final:
                logger.warning("resilient: %r reaches Redis again; breakers resynchronised", self)
            self._warned = False
        for link in links:  # the others' totals may have tipped the fleet over a threshold
            link.resync(now)
        return True

    async def _send(self, sent: list[tuple[list[str], list[Any], Any]]) -> list[Any]:
        """One pipeline of script calls, one round trip (the script loaded first if Redis lacks it).

        Not through the registered script inside the pipeline: redis-py then
        asks ``SCRIPT EXISTS`` before every pipeline, a second round trip.
        Redis answers ``NOSCRIPT`` without running anything when it does not
        know the script (a new or restarted server): then it is loaded and the
        round sent again (reports are totals, so sending one again is safe).
        """
        from redis.exceptions import NoScriptError

        for _ in range(2):
            async with self.client.pipeline(transaction=False) as pipe:  # reset if cancelled
                for keys, args, _token in sent:
                    pipe.evalsha(self._sync_sha, len(keys), *keys, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            if not any(isinstance(reply, NoScriptError) for reply in replies):
                break
            self._sync_sha = await self.client.script_load(_SYNC)
        return replies

    def _fault(self, exc: BaseException) -> None:
        self._reachable = False
        if not self._warned:
            self._warned = True
            logger.warning(
                "resilient: %r cannot reach Redis (%r): breakers work on local state "
                "until it answers",
                self,
                exc,
            )

    def _not_running(self) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "resilient: %r is not running (use `async with store:` on asyncio): "
                "breakers work on local state",
                self,
            )

    # -- links ----------------------------------------------------------------------

    def attach(self, breaker: CircuitBreaker, name: str) -> _RedisLink:
        """The link of ``breaker`` to the shared state named ``name``."""
        link = _RedisLink(self, breaker, name, f"{self._member}:{next(_ids)}")
        self._links.add(link)
        return link

    def _keys(self, name: str) -> list[str]:
        tagged = f"{self.prefix}:{{{name}}}"
        return [f"{tagged}:state", f"{tagged}:trials", f"{tagged}:windows"]

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"


def _view(reply: list[Any], now: float) -> SharedView:
    """A script's ``gen, state, remaining_ms, duration`` as a view on this loop's clock."""
    gen, state, remaining, duration = int(reply[0]), _text(reply[1]), int(reply[2]), reply[3]
    kind = CircuitState(state)
    return SharedView(
        gen, kind, now + remaining / 1000 if kind is OPEN else 0.0, float(_text(duration))
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@final
class _RedisLink:
    """One breaker's end of the shared state in Redis (see ``BreakerLink``).

    Holds what the last round brought (``view``, the others' totals) and what
    the next round takes (a pending transition, trial outcomes).
    """

    __slots__ = (
        "__weakref__",
        "_breaker",
        "_fleet",
        "gen",
        "keys",
        "kind",
        "member",
        "others",
        "pending",
        "store",
        "trial",
        "trial_gen",
        "view",
        "window",
    )

    def __init__(self, store: RedisStore, breaker: CircuitBreaker, name: str, member: str) -> None:
        self.store = store
        self._breaker = weakref.ref(breaker)
        self.keys = store._keys(name)
        self.member = member
        self.gen = 0  # 0: never synced; a CLOSED fleet is then followed as it is
        self.view = SharedView(0, CLOSED)
        self.kind = CLOSED
        self.window: Window | None = None
        self._fleet: FleetCounts | None = None
        self.others = (0, 0, 0)
        # (state, until, duration, manual) to publish, or None
        self.pending: tuple[CircuitState, float, float, bool] | None = None
        # This member's trials in the fleet's HALF_OPEN generation trial_gen, as
        # totals (calls, failed, slow, permits released): every round reports
        # them whole, and Redis counts what is new since it last saw them.
        self.trial_gen = 0
        self.trial = [0, 0, 0, 0]

    def alive(self) -> bool:
        return self._breaker() is not None

    @property
    def degraded(self) -> bool:
        return self.store.degraded

    def pull(self) -> SharedView | None:
        view = self.view
        if view.gen == self.gen or self.store.degraded:
            return None
        self.gen = view.gen
        return view

    def counts(self, window: Window) -> FleetCounts:
        self.window = window
        self._fleet = fleet = FleetCounts(window, self._others)
        return fleet

    def _others(self, now: float) -> tuple[int, int, int]:
        return (0, 0, 0) if self.store.degraded else self.others

    def on_state(self, kind: CircuitState, until: float, duration: float, how: How) -> None:
        self.kind = kind
        if kind is not CLOSED and self._fleet is not None:
            self._fleet.live = False  # keep showing the counts that ended the period
        if how == "adopted" or kind is HALF_OPEN:
            return  # the fleet's HALF_OPEN starts with its first permit
        self.pending = (kind, until, duration, how == "manual")
        if self.store.running:
            self.store._poke()
        else:
            self.store._not_running()

    # -- a round --------------------------------------------------------------------

    def request(self, now: float) -> tuple[list[str], list[Any], Any]:
        """The script's keys and arguments for this round, and what to clear if it lands."""
        b = self._breaker()
        assert b is not None
        window = self.window
        calls = failed = slow = 0
        if self.kind is CLOSED and window is not None:
            window.expire(now)
            calls, failed, slow = window.calls, window.failed, window.slow
        pending = self.pending
        pub: list[Any] = ["", 0, "0", 0]
        if pending is not None:
            kind, until, duration, manual = pending
            remaining = max(0, round((until - now) * 1000)) if kind is OPEN else 0
            pub = [kind.value, remaining, repr(duration), int(manual)]
        trial = self.trial
        cap = b.open_duration_max
        store = self.store
        args = [
            round(store.ttl * 1000),
            self.member,
            self.gen,
            calls,
            failed,
            slow,
            round(store.member_ttl * 1000),
            *pub,
            self.trial_gen,
            *trial,
            b.half_open_max_calls,
            repr(b.failure_rate_threshold),
            repr(b.slow_call_rate_threshold),
            repr(b.open_duration_multiplier),
            -1 if cap is None else repr(cap),
        ]
        return self.keys, args, pending

    def answer(self, token: Any, reply: Any, now: float) -> None:
        """Take a round's reply (an error reply counts as no answer for this breaker)."""
        if isinstance(reply, Exception):
            self.store._fault(reply)
            return
        if self.pending is token:
            self.pending = None  # published, or the fleet's newer state won
        self._take(_view(reply, now))
        self.others = (int(reply[4]), int(reply[5]), int(reply[6]))
        self.gen = max(self.gen, int(reply[7]))

    def resync(self, now: float) -> None:
        b = self._breaker()
        if b is not None:
            b._resync(now)

    def _take(self, view: SharedView) -> None:
        if view.gen >= self.view.gen:  # replies may cross: never go back
            self.view = view

    # -- trials -----------------------------------------------------------------------

    async def acquire_trial(self) -> bool | None:
        store = self.store
        if not store.running:
            store._not_running()
            return None
        if store.degraded:
            return None
        b = self._breaker()
        if b is None:
            return False
        args = [round(store.ttl * 1000), self.gen, b.half_open_max_calls]
        # Shielded: once asked, the answer is taken (a granted permit is then
        # returned by the call's own cancellation path), bounded by the timeout.
        request = asyncio.ensure_future(self._ask(args))
        try:
            reply = await asyncio.shield(request)
        except asyncio.CancelledError:
            request.add_done_callback(self._give_back)
            raise
        if reply is None:
            return None
        return self._granted(reply)

    async def _ask(self, args: list[Any]) -> Any:
        try:
            async with asyncio.timeout(self.store.timeout):
                return await self.store._acquire_script(keys=self.keys[:2], args=args)
        except Exception as exc:
            self.store._fault(exc)
            return None

    def _granted(self, reply: Any) -> bool:
        self._take(_view(reply, _now()))
        if int(reply[4]):
            gen = int(reply[0])
            if gen != self.trial_gen:  # the fleet's trials of a new HALF_OPEN period
                self.trial_gen = gen
                self.trial = [0, 0, 0, 0]
            self.gen = gen
            return True
        return False

    def _give_back(self, request: asyncio.Future[Any]) -> None:
        """A permit request whose caller was cancelled: return the permit if granted."""
        reply = None if request.cancelled() else request.result()
        if reply is not None and self._granted(reply):
            self.release_trial()

    def trial_done(self, failed: bool, slow: bool) -> bool:
        if self.store.degraded:
            return False
        t = self.trial
        t[0] += 1
        t[1] += failed
        t[2] += slow
        self.store._poke()
        return True

    def release_trial(self) -> None:
        self.trial[3] += 1
        self.store._poke()
