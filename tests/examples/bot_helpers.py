"""Helpers for the example bot's tests: emulators, fast settings, a running bot.

These tests use real sockets on 127.0.0.1 and the real aiogram client, so
they run on asyncio only (pytest-asyncio, ``@pytest.mark.asyncio``) and in
real time; every duration is shrunk through ``Timings.scaled`` to keep them fast.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) from the repo root
    sys.path.insert(0, str(ROOT))

from examples.telegram_bot.app import BotApp, open_bot  # noqa: E402
from examples.telegram_bot.config import Settings, Timings  # noqa: E402
from examples.telegram_bot.emulators import BotAPIEmulator, LLMEmulator, SentMessage  # noqa: E402

TOKEN = "123456:TEST-token"
WEBHOOK_SECRET = "test-webhook-secret"
PRIMARY = "primary-model"
SECONDARY = "secondary-model"

# Everything 20 times shorter: a 1.5 s reply deadline, 0.5 s LLM attempts,
# a 3 s breaker window. The store keeps a sane timeout: SQLite on a busy CI disk.
FAST = Timings().scaled(0.05, store_timeout=2.0, inflight_poll_interval=0.02)


def make_settings(
    api: BotAPIEmulator, llm: LLMEmulator, store_url: str, timings: Timings = FAST
) -> Settings:
    return Settings(
        bot_token=TOKEN,
        telegram_api_url=api.url,
        llm_base_url=llm.url,
        llm_api_key="test",
        primary_model=PRIMARY,
        secondary_model=SECONDARY,
        state_store_url=store_url,
        timings=timings,
    )


def part_numbers(sent: list[SentMessage], parts: list[str]) -> list[tuple[int, int | None]]:
    """(index of the part, the message it replies to) per message sent, -1 for a text
    that is no part: a split reply sent twice reads at a glance in a failed assert."""
    return [(parts.index(m.text) if m.text in parts else -1, m.reply_to) for m in sent]


@asynccontextmanager
async def emulators() -> AsyncIterator[tuple[BotAPIEmulator, LLMEmulator]]:
    async with BotAPIEmulator(token=TOKEN) as api, LLMEmulator() as llm:
        yield api, llm


@asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[BotApp]:
    """A bot polling in the background until the block ends (then cancelled, like a kill)."""
    async with open_bot(settings, **kwargs) as app, anyio.create_task_group() as tg:
        tg.start_soon(app.run)
        try:
            yield app
        finally:
            tg.cancel_scope.cancel()


REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def webhook_settings(
    api: BotAPIEmulator, llm: LLMEmulator, store_url: str, **changes: Any
) -> Settings:
    """Webhook mode on a free port of 127.0.0.1; registers a public-looking URL."""
    base = make_settings(api, llm, store_url)
    defaults: dict[str, Any] = {
        "mode": "webhook",
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_host": "127.0.0.1",
        "webhook_port": 0,
        "webhook_url": "https://bot.example/webhook",
    }
    return dataclasses.replace(base, **(defaults | changes))


@asynccontextmanager
async def replica(settings: Settings, **kwargs: Any) -> AsyncIterator[tuple[BotApp, str]]:
    """A bot in webhook mode, listening: (the app, its webhook URL)."""
    async with running(settings, **kwargs) as app:
        with anyio.fail_after(10):
            await app.ready.wait()
        yield app, f"http://127.0.0.1:{app.ports['webhook']}{settings.webhook_path}"
