"""One chat at a time: a lock per chat, in one process or across replicas (Redis).

Handling a message loads the chat's conversation, changes it and saves it:
two messages of one chat handled at once would lose one of the changes, and
one update delivered to two replicas at once would be answered twice. The
handler therefore runs each update under its chat's lock:

- :class:`LocalChatLocks`: an ``anyio.Lock`` per chat (one process; the
  SQLite store, or polling, where only one process may run anyway);
- :class:`RedisChatLocks`: the same local lock first (so one process sends
  Redis one contender per chat, not one per waiting update), then a Redis
  key ``<prefix>lock:chat:<id>`` set with ``NX`` and a TTL, holding a random
  token. While held, a background task extends the TTL every third of it,
  if the key still holds our token; the release deletes the key only if it
  does (both are Lua scripts: compare and act in one step). A replica that
  dies holding a lock blocks the chat for at most ``ttl`` seconds.

A :class:`Lease` says how long the lock is certainly still ours: the
handler checks :meth:`Lease.held` before it saves, so a replica that stalled
longer than the TTL (and may have lost the chat to another) saves nothing and
leaves the update to be handled again.

Waiting for a lock longer than ``wait`` seconds raises :class:`ChatBusy`;
the update stays unfinished and is offered again.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import redis.asyncio

__all__ = ["ChatBusy", "ChatLocks", "Lease", "LocalChatLocks", "RedisChatLocks"]

log = logging.getLogger("examples.telegram_bot.locks")

_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class ChatBusy(Exception):
    """The chat's lock was not free within the wait (another update of it is being handled)."""


@dataclass(slots=True)
class Lease:
    """A held chat lock: ours until ``expires_at`` (loop clock) unless ``lost``."""

    chat_id: int
    expires_at: float = math.inf
    lost: bool = False

    def held(self) -> bool:
        """Whether the lock is certainly still ours now."""
        return not self.lost and anyio.current_time() < self.expires_at


class ChatLocks(Protocol):
    def hold(self, chat_id: int) -> Any:
        """``async with locks.hold(chat_id) as lease:``; raises :class:`ChatBusy` on timeout."""
        ...

    async def aclose(self) -> None: ...


class _Keyed:
    """An ``anyio.Lock`` per key, dropped when no task holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: int, wait: float) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            try:
                with anyio.fail_after(wait):
                    await lock.acquire()
            except TimeoutError:
                raise ChatBusy(f"chat {key}: still busy after {wait:g}s") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class LocalChatLocks:
    """Per-chat locks in this process. ``wait``: seconds before :class:`ChatBusy`."""

    def __init__(self, wait: float = 30.0) -> None:
        self._keyed = _Keyed()
        self.wait = wait

    @asynccontextmanager
    async def hold(self, chat_id: int) -> AsyncIterator[Lease]:
        async with self._keyed.hold(chat_id, self.wait):
            yield Lease(chat_id)

    async def aclose(self) -> None:
        pass


class RedisChatLocks:
    """Per-chat locks shared by every replica using ``client`` and ``prefix``.

    ``ttl``: seconds a lock lives without being extended (default 10: a dead
    holder's lock blocks the chat that long at most, well inside a message's
    30 s reply deadline; a live holder extends it every third); ``wait``: seconds to wait for it
    (default 30); ``owner``: names this replica in the token (for debugging
    with ``redis-cli get``).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        ttl: float = 10.0,
        wait: float = 30.0,
        owner: str = "",
    ) -> None:
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"RedisChatLocks: ttl must be > 0 seconds, got {ttl!r}")
        self._r = client
        self._prefix = prefix
        self.ttl = ttl
        self.wait = wait
        self._owner = owner
        self._keyed = _Keyed()
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)

    def key(self, chat_id: int) -> str:
        return f"{self._prefix}lock:chat:{chat_id}"

    @asynccontextmanager
    async def hold(self, chat_id: int) -> AsyncIterator[Lease]:
        started = anyio.current_time()
        async with self._keyed.hold(chat_id, self.wait):
            token = f"{self._owner}:{uuid.uuid4().hex}"
            lease = await self._acquire(chat_id, token, started + self.wait)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._keep, lease, token)
                    try:
                        yield lease
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                # Shielded (a cancelled handler still frees the chat), but bounded:
                # if Redis does not answer, the key expires by itself.
                with anyio.move_on_after(self.ttl, shield=True):
                    try:
                        await self._release(keys=[self.key(chat_id)], args=[token])
                    except Exception as exc:  # it expires by itself within ttl
                        log.warning("chat %d: lock not released: %r", chat_id, exc)

    async def _acquire(self, chat_id: int, token: str, give_up_at: float) -> Lease:
        ms = max(1, round(self.ttl * 1000))
        pause = 0.002
        while True:
            asked = anyio.current_time()
            if await self._r.set(self.key(chat_id), token, nx=True, px=ms):
                return Lease(chat_id, asked + self.ttl)
            left = give_up_at - anyio.current_time()
            if left <= 0:
                raise ChatBusy(f"chat {chat_id}: locked by another replica for over {self.wait:g}s")
            # Another replica has the chat: poll, backing off to 20 ms (a handled
            # message takes milliseconds to seconds; pub/sub would be overkill).
            await anyio.sleep(min(pause, left))
            pause = min(pause * 2, 0.02)

    async def _keep(self, lease: Lease, token: str) -> None:
        """Extend the TTL every third of it while the lock is ours."""
        ms = max(1, round(self.ttl * 1000))
        while True:
            await anyio.sleep(self.ttl / 3)
            asked = anyio.current_time()
            try:
                kept = await self._extend(keys=[self.key(lease.chat_id)], args=[token, ms])
            except Exception as exc:  # Redis away: the lease runs out by itself
                log.warning("chat %d: lock not extended: %r", lease.chat_id, exc)
                continue
            if not kept:
                lease.lost = True
                log.warning("chat %d: lock lost (expired, and maybe taken)", lease.chat_id)
                return
            lease.expires_at = asked + self.ttl

    async def aclose(self) -> None:
        pass
