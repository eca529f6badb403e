"""Fixtures for the example bot's tests: SQLite files, Redis key prefixes, both stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from bot_helpers import REDIS_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bot.db'}"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix on the machine's Redis, deleted afterwards.

    No Redis: skipped with the reason, except under CI=true, where it fails.
    """
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        client.close()
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no Redis answers at {REDIS_URL}: {exc!r}")
        pytest.skip(f"no Redis answers at {REDIS_URL} (set REDIS_URL): {exc!r}")
    prefix = f"tgbot-test-{uuid.uuid4().hex}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(STATE_STORE_URL, key prefix) for each store."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bot.db'}", "tgbot:"
    prefix: str = request.getfixturevalue("redis_prefix")
    return REDIS_URL, prefix
