"""The state stores keep the same contract, SQLite and Redis; SQLite survives kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
import redis
from bot_helpers import REDIS_URL, ROOT
from examples.telegram_bot.models import Conversation, DecisionState, Outbox, Preferences, Turn
from examples.telegram_bot.stores import StateStore, open_store

from resilient import Backoff, Pipeline, Retry, Timeout

pytestmark = pytest.mark.asyncio


def sample() -> Conversation:
    return Conversation(
        state=DecisionState.AWAITING_CONFIRMATION,
        flow="reminder",
        slots={"what": "call mom", "when": "in 5 minutes"},
        history=[Turn("user", "remind me"), Turn("assistant", "What should I remind you about?")],
        version=3,
    )


async def opened(store: tuple[str, str]) -> StateStore:
    url, prefix = store
    policy = Pipeline(Retry("store", attempts=2, backoff=Backoff.constant(0.01)), Timeout(2.0))
    return await open_store(url, policy=policy, ttl=3600.0, prefix=prefix)


async def test_unknown_chat_loads_fresh_state(store: tuple[str, str]) -> None:
    """A chat, user or update never seen: IDLE with no history, default preferences, no outbox."""
    s = await opened(store)
    try:
        assert await s.load(1) == Conversation()
        assert await s.load_preferences(1) == Preferences()
        assert await s.outbox(1) is None
    finally:
        await s.aclose()


async def test_conversation_and_outbox_round_trip(store: tuple[str, str]) -> None:
    """What is saved is loaded back, the outbox entry with it; mark_sent flips it."""
    s = await opened(store)
    try:
        box = Outbox(update_id=77, chat_id=5, reply_to=12, text="Set a reminder? (yes/no)")
        await s.save(5, sample(), box)
        await s.save_preferences(9, Preferences(style="short"))
        assert await s.load(5) == sample()
        assert await s.outbox(77) == box
        assert await s.load_preferences(9) == Preferences(style="short")
        await s.mark_sent(77)
        assert await s.outbox(77) == Outbox(77, 5, 12, "Set a reminder? (yes/no)", sent=True)
        await s.mark_sent(78)  # unknown: nothing to mark
        assert await s.outbox(78) is None
    finally:
        await s.aclose()


async def test_outbox_remembers_the_parts_delivered(store: tuple[str, str]) -> None:
    """How many parts of a split reply went out is kept with the outbox entry, and is
    read back by another instance (a restarted bot); mark_sent keeps it."""
    a, b = await opened(store), await opened(store)
    try:
        box = Outbox(update_id=79, chat_id=5, reply_to=13, text="x" * 9000)
        await a.save(5, sample(), box)
        await a.mark_parts_sent(79, 2)
        assert await b.outbox(79) == Outbox(79, 5, 13, "x" * 9000, parts_sent=2)
        await b.mark_sent(79)
        assert await a.outbox(79) == Outbox(79, 5, 13, "x" * 9000, sent=True, parts_sent=2)
        await a.mark_parts_sent(80, 1)  # unknown: nothing to mark
        assert await a.outbox(80) is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_state_is_shared_by_two_store_instances(store: tuple[str, str]) -> None:
    """A second instance (another process, another replica) sees what the first saved."""
    a, b = await opened(store), await opened(store)
    try:
        await a.save(6, sample())
        assert await b.load(6) == sample()
    finally:
        await a.aclose()
        await b.aclose()


async def test_cleanup_stale_drops_old_state_but_keeps_recent_outbox(
    store: tuple[str, str],
) -> None:
    """cleanup_stale(older_than) drops conversations and preferences written before the
    cutoff, and keeps outbox entries for a day (Telegram may offer an update again)."""
    s = await opened(store)
    try:
        await s.save(7, sample(), Outbox(80, 7, 1, "hi"))
        await s.save_preferences(7, Preferences(style="short"))
        assert await s.cleanup_stale(3600.0) == 0
        await anyio.sleep(0.01)
        assert await s.cleanup_stale(0.0) == 2
        assert await s.load(7) == Conversation()
        assert await s.load_preferences(7) == Preferences()
        assert await s.outbox(80) is not None
    finally:
        await s.aclose()


async def test_redis_keys_expire_after_an_hour(redis_prefix: str) -> None:
    """Every Redis key has a TTL: an hour for state, a day for the outbox."""
    s = await opened((REDIS_URL, redis_prefix))
    try:
        await s.save(8, sample(), Outbox(81, 8, 1, "hi"))
        await s.save_preferences(8, Preferences())
    finally:
        await s.aclose()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert 3500 < client.ttl(f"{redis_prefix}chat:8") <= 3600
        assert 3500 < client.ttl(f"{redis_prefix}prefs:8") <= 3600
        assert 86000 < client.ttl(f"{redis_prefix}outbox:81") <= 86400
    finally:
        client.close()


async def test_sqlite_uses_wal_and_closes(tmp_path: Path) -> None:
    """The SQLite file is in WAL mode; a closed store refuses work."""
    path = tmp_path / "wal.db"
    s = await open_store(f"sqlite:///{path}")
    await s.save(1, sample())
    await s.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(RuntimeError, match="closed"):
        await s.load(1)


async def test_open_store_rejects_unknown_urls() -> None:
    """Only sqlite:/// and redis:// URLs are stores."""
    with pytest.raises(ValueError, match="got 'postgres://db'"):
        await open_store("postgres://db")


async def test_sqlite_state_survives_kill_9(tmp_path: Path) -> None:
    """A process killed with SIGKILL right after a save loses nothing it saved."""
    path = tmp_path / "killed.db"
    script = textwrap.dedent(
        f"""
        import os, signal, anyio
        from examples.telegram_bot.models import Conversation, Outbox, Turn
        from examples.telegram_bot.stores import open_store

        async def main():
            store = await open_store("sqlite:///{path}")
            conv = Conversation(history=[Turn("user", "remember me")], version=1)
            await store.save(42, conv, Outbox(500, 42, 3, "I will"))
            os.kill(os.getpid(), signal.SIGKILL)  # no close, no clean exit

        anyio.run(main)
        """
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, timeout=30)
    )
    assert done.returncode == -signal.SIGKILL
    s = await open_store(f"sqlite:///{path}")
    try:
        conv = await s.load(42)
        assert conv.history == [Turn("user", "remember me")]
        assert await s.outbox(500) == Outbox(500, 42, 3, "I will")
    finally:
        await s.aclose()
