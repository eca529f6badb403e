"""Where conversations live: the ``StateStore`` interface, SQLite and Redis.

A store keeps, per chat, the :class:`~.models.Conversation` (decision state,
open flow, history); per user, the :class:`~.models.Preferences`; and per
update, the :class:`~.models.Outbox` entry (the reply decided for it, how
many of its parts were delivered, and whether it was sent). Saving a
conversation together with its update's outbox entry is atomic, so after a
crash an update is either undecided (it is handled again) or decided (its
recorded reply is sent), never half of each.

- :class:`SQLiteStateStore` (default): one file, WAL mode, the stdlib
  ``sqlite3`` called on the event loop itself. Each statement takes tens of
  microseconds; a hop to a worker thread took milliseconds under load (the
  thread waits for the GIL, up to the 5 ms switch interval, while the loop
  is busy), which capped the whole bot at about 70 messages/s. A lock held
  by another process is not waited out on the loop (``busy_timeout`` 20 ms):
  "database is locked" goes to the ``state-store`` policy, which retries.
  Every write is committed before the call returns, so a ``kill -9`` loses
  nothing that was saved.
- :class:`RedisStateStore`: for several replicas. Keys expire one hour after
  the last write (the original design's TTL); outbox entries after a day
  (Telegram keeps an update for 24 hours). Timeouts are set and redis-py's
  own retries are off: the ``state-store`` policy retries instead.

Every operation runs through the ``state-store`` policy (see :mod:`.policies`).
Wall-clock time (``time.time()``) dates the records: it must survive restarts
and be comparable across hosts, which the event loop's clock is not.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import redis.asyncio
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff

from resilient import Policy

from .models import Conversation, Outbox, Preferences

__all__ = ["RedisStateStore", "SQLiteStateStore", "StateStore", "open_store", "redis_client"]

T = TypeVar("T")

OUTBOX_TTL = 24 * 3600.0  # Telegram forgets an unconfirmed update after a day


class StateStore(Protocol):
    """Persistence of conversations, preferences and replies. See the module docstring."""

    async def load(self, chat_id: int) -> Conversation:
        """The chat's conversation, or a fresh one (IDLE, no history)."""
        ...

    async def save(
        self, chat_id: int, conversation: Conversation, outbox: Outbox | None = None
    ) -> None:
        """Save the conversation and, atomically with it, the update's reply."""
        ...

    async def load_preferences(self, user_id: int) -> Preferences: ...

    async def save_preferences(self, user_id: int, preferences: Preferences) -> None: ...

    async def outbox(self, update_id: int) -> Outbox | None:
        """The reply recorded for an update, or ``None`` if it was never decided."""
        ...

    async def mark_sent(self, update_id: int) -> None:
        """Record that the update's reply was delivered."""
        ...

    async def mark_parts_sent(self, update_id: int, parts: int) -> None:
        """Record that the first ``parts`` parts of the update's split reply were delivered."""
        ...

    async def cleanup_stale(self, older_than: float) -> int:
        """Delete records last written more than ``older_than`` seconds ago; return how many.

        Outbox entries are kept at least a day, as long as Telegram may return
        their update again.
        """
        ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached now (for ``/health``; not retried)."""
        ...

    async def aclose(self) -> None: ...


async def _through(policy: Policy | None, fn: Callable[[], Awaitable[T]]) -> T:
    return await fn() if policy is None else await policy.call(fn)


# --- SQLite -----------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    chat_id INTEGER PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS preferences (
    user_id INTEGER PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    update_id INTEGER PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL);
"""


class SQLiteStateStore:
    """The default store: a SQLite file. Open with :meth:`open`; always ``aclose()``."""

    def __init__(
        self, conn: sqlite3.Connection, policy: Policy | None, outbox_ttl: float = OUTBOX_TTL
    ) -> None:
        self._conn = conn
        self._policy = policy
        self._outbox_ttl = outbox_ttl
        self._closed = False

    @classmethod
    async def open(
        cls, path: str | Path, *, policy: Policy | None = None, outbox_ttl: float = OUTBOX_TTL
    ) -> SQLiteStateStore:
        """Open (and create) the file; ``outbox_ttl``: seconds an update id is remembered."""

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a committed transaction survives the process
                # being killed (not a power cut, which this bot need not survive).
                conn.execute("PRAGMA synchronous=NORMAL")
                # Short: a wait here blocks the loop; the store policy retries instead.
                conn.execute("PRAGMA busy_timeout=20")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            return conn

        return cls(await anyio.to_thread.run_sync(connect), policy, outbox_ttl)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("SQLiteStateStore: the store is closed")

        async def op() -> T:
            return fn(*args)  # on the loop: see the module docstring

        return await _through(self._policy, op)

    def _get(self, sql: str, key: int) -> Any:
        row = self._conn.execute(sql, (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    async def load(self, chat_id: int) -> Conversation:
        data = await self._run(self._get, "SELECT data FROM chats WHERE chat_id = ?", chat_id)
        return Conversation() if data is None else Conversation.from_json(data)

    def _save(self, chat_id: int, conv: str, update_id: int | None, outbox: str | None) -> None:
        now = time.time()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(
                "INSERT OR REPLACE INTO chats (chat_id, data, updated_at) VALUES (?, ?, ?)",
                (chat_id, conv, now),
            )
            if outbox is not None:
                self._conn.execute(
                    "INSERT OR REPLACE INTO outbox (update_id, data, updated_at) VALUES (?, ?, ?)",
                    (update_id, outbox, now),
                )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    async def save(
        self, chat_id: int, conversation: Conversation, outbox: Outbox | None = None
    ) -> None:
        await self._run(
            self._save,
            chat_id,
            json.dumps(conversation.to_json()),
            None if outbox is None else outbox.update_id,
            None if outbox is None else json.dumps(outbox.to_json()),
        )

    async def load_preferences(self, user_id: int) -> Preferences:
        sql = "SELECT data FROM preferences WHERE user_id = ?"
        data = await self._run(self._get, sql, user_id)
        return Preferences() if data is None else Preferences.from_json(data)

    def _put(self, sql: str, key: int, data: str) -> None:
        self._conn.execute(sql, (key, data, time.time()))

    async def save_preferences(self, user_id: int, preferences: Preferences) -> None:
        sql = "INSERT OR REPLACE INTO preferences (user_id, data, updated_at) VALUES (?, ?, ?)"
        await self._run(self._put, sql, user_id, json.dumps(preferences.to_json()))

    async def outbox(self, update_id: int) -> Outbox | None:
        data = await self._run(self._get, "SELECT data FROM outbox WHERE update_id = ?", update_id)
        return None if data is None else Outbox.from_json(data)

    def _update_outbox(self, update_id: int, changes: dict[str, Any]) -> None:
        row = self._conn.execute(
            "SELECT data FROM outbox WHERE update_id = ?", (update_id,)
        ).fetchone()
        if row is not None:
            data = json.loads(row[0]) | changes
            self._put(
                "INSERT OR REPLACE INTO outbox (update_id, data, updated_at) VALUES (?, ?, ?)",
                update_id,
                json.dumps(data),
            )

    async def mark_sent(self, update_id: int) -> None:
        await self._run(self._update_outbox, update_id, {"sent": True})

    async def mark_parts_sent(self, update_id: int, parts: int) -> None:
        await self._run(self._update_outbox, update_id, {"parts_sent": parts})

    def _cleanup(self, older_than: float) -> int:
        now = time.time()
        removed = 0
        for table, age in (
            ("chats", older_than),
            ("preferences", older_than),
            ("outbox", max(older_than, self._outbox_ttl)),  # as long as Telegram may resend
        ):
            cur = self._conn.execute(f"DELETE FROM {table} WHERE updated_at < ?", (now - age,))
            removed += cur.rowcount
        return removed

    async def cleanup_stale(self, older_than: float) -> int:
        return await self._run(self._cleanup, older_than)

    async def ping(self) -> None:
        if self._closed:
            raise RuntimeError("SQLiteStateStore: the store is closed")
        self._select_one()

    def _select_one(self) -> None:
        self._conn.execute("SELECT 1").fetchone()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()


# --- Redis -------------------------------------------------------------------------


class RedisStateStore:
    """Conversations in Redis under ``prefix``, each key living ``ttl`` seconds after a write."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "tgbot:",
        ttl: float = 3600.0,
        policy: Policy | None = None,
        owns_client: bool = False,
        outbox_ttl: float = OUTBOX_TTL,
    ) -> None:
        self._r = client
        self._prefix = prefix
        self._ttl = max(1, round(ttl))
        self._outbox_ttl = max(1, round(outbox_ttl))
        self._policy = policy
        self._owns = owns_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "tgbot:",
        ttl: float = 3600.0,
        timeout: float = 2.0,
        policy: Policy | None = None,
        outbox_ttl: float = OUTBOX_TTL,
    ) -> RedisStateStore:
        """A client with explicit timeouts and no retries of its own (the policy retries)."""
        return cls(
            redis_client(url, timeout=timeout),
            prefix=prefix,
            ttl=ttl,
            policy=policy,
            owns_client=True,
            outbox_ttl=outbox_ttl,
        )

    @property
    def client(self) -> redis.asyncio.Redis:
        """The Redis client (the per-chat locks and the breaker store share it)."""
        return self._r

    @property
    def prefix(self) -> str:
        return self._prefix

    def _key(self, kind: str, ident: int) -> str:
        return f"{self._prefix}{kind}:{ident}"

    async def _get(self, key: str) -> Any:
        async def op() -> Any:
            raw = await self._r.get(key)
            return None if raw is None else json.loads(raw)

        return await _through(self._policy, op)

    @staticmethod
    def _wrap(data: dict[str, Any]) -> str:
        return json.dumps({"data": data, "updated_at": time.time()})

    async def load(self, chat_id: int) -> Conversation:
        found = await self._get(self._key("chat", chat_id))
        return Conversation() if found is None else Conversation.from_json(found["data"])

    async def save(
        self, chat_id: int, conversation: Conversation, outbox: Outbox | None = None
    ) -> None:
        chat = self._wrap(conversation.to_json())
        box = None if outbox is None else self._wrap(outbox.to_json())

        async def op() -> None:
            async with self._r.pipeline(transaction=True) as pipe:  # MULTI/EXEC: atomic
                pipe.set(self._key("chat", chat_id), chat, ex=self._ttl)
                if outbox is not None and box is not None:
                    pipe.set(self._key("outbox", outbox.update_id), box, ex=self._outbox_ttl)
                await pipe.execute()

        await _through(self._policy, op)

    async def load_preferences(self, user_id: int) -> Preferences:
        found = await self._get(self._key("prefs", user_id))
        return Preferences() if found is None else Preferences.from_json(found["data"])

    async def save_preferences(self, user_id: int, preferences: Preferences) -> None:
        value = self._wrap(preferences.to_json())

        async def op() -> None:
            await self._r.set(self._key("prefs", user_id), value, ex=self._ttl)

        await _through(self._policy, op)

    async def outbox(self, update_id: int) -> Outbox | None:
        found = await self._get(self._key("outbox", update_id))
        return None if found is None else Outbox.from_json(found["data"])

    async def mark_sent(self, update_id: int) -> None:
        await self._update_outbox(update_id, {"sent": True})

    async def mark_parts_sent(self, update_id: int, parts: int) -> None:
        await self._update_outbox(update_id, {"parts_sent": parts})

    async def _update_outbox(self, update_id: int, changes: dict[str, Any]) -> None:
        found = await self.outbox(update_id)
        if found is None:
            return
        value = self._wrap(found.to_json() | changes)

        async def op() -> None:
            await self._r.set(self._key("outbox", update_id), value, ex=self._outbox_ttl)

        await _through(self._policy, op)

    async def cleanup_stale(self, older_than: float) -> int:
        """Keys expire by themselves; this also drops those older than ``older_than``."""
        now = time.time()
        removed = 0
        async for key in self._r.scan_iter(match=f"{self._prefix}*", count=500):
            raw = await self._r.get(key)
            if raw is None:
                continue
            try:
                stamp = float(json.loads(raw)["updated_at"])
            except (ValueError, KeyError, TypeError):
                continue
            is_outbox = key.startswith(f"{self._prefix}outbox:")
            if stamp < now - (max(older_than, self._outbox_ttl) if is_outbox else older_than):
                removed += await self._r.delete(key)
        return removed

    async def ping(self) -> None:
        await self._r.ping()

    async def aclose(self) -> None:
        if self._owns:
            with anyio.move_on_after(5.0, shield=True):  # a stop never hangs on Redis
                await self._r.aclose()


def redis_client(url: str, *, timeout: float = 2.0) -> redis.asyncio.Redis:
    """A client for ``url`` with explicit timeouts (seconds) and no retries of its own.

    ``Redis()`` would retry 10 times, ``from_url()`` not at all, and socket
    timeouts are off by default: the ``state-store`` policy decides instead.
    """
    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=RedisRetry(NoBackoff(), retries=0),
        retry_on_timeout=False,
        decode_responses=True,
    )


async def open_store(
    url: str,
    *,
    policy: Policy | None = None,
    ttl: float = 3600.0,
    prefix: str = "tgbot:",
    outbox_ttl: float = OUTBOX_TTL,
) -> StateStore:
    """Open the store named by ``STATE_STORE_URL``.

    ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``, or ``redis://…``.
    ``ttl``: seconds a conversation lives after its last write (Redis);
    ``outbox_ttl``: seconds an update id (and its reply) is remembered.
    """
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise ValueError(f"open_store: the sqlite URL names no file, got {url!r}")
        return await SQLiteStateStore.open(path, policy=policy, outbox_ttl=outbox_ttl)
    if url.startswith(("redis://", "rediss://")):
        return RedisStateStore.from_url(
            url, policy=policy, ttl=ttl, prefix=prefix, outbox_ttl=outbox_ttl
        )
    raise ValueError(f"open_store: url must be sqlite:///… or redis://…, got {url!r}")
