"""Webhook mode on one replica (SQLite): the secret is checked before anything is read,
Telegram's redelivery after a failure is answered once, getUpdates is refused meanwhile."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import anyio
import pytest
from bot_helpers import (
    FAST,
    PRIMARY,
    SECONDARY,
    WEBHOOK_SECRET,
    emulators,
    replica,
    webhook_settings,
)
from examples.telegram_bot.emulators import Latency, ServerError
from examples.telegram_bot.webhook import SECRET_HEADER

pytestmark = pytest.mark.asyncio


async def test_wrong_or_missing_secret_is_refused_and_nothing_processed(
    sqlite_url: str,
) -> None:
    """A POST with a wrong secret token, or none, gets 401, and the update is neither
    handled nor answered nor remembered; the same update with the right secret is.
    (/metrics, on a port of its own, counts the refusals.)"""
    async with emulators() as (api, llm):
        settings = webhook_settings(api, llm, sqlite_url, webhook_url=None, metrics_port=0)
        async with replica(settings) as (app, url), aiohttp.ClientSession() as http:
            msg = api.user_says(91, "hello there")
            body = api.update_body(msg)

            async def post(headers: dict[str, str]) -> int:
                async with http.post(url, json=body, headers=headers) as resp:
                    return resp.status

            refused = [
                await post({SECRET_HEADER: "not-the-secret"}),
                await post({}),
                await post({SECRET_HEADER: WEBHOOK_SECRET + "x"}),
            ]
            assert (api.sent, llm.requests, app.stats.messages_in) == ([], [], 0)
            assert await app.store.outbox(msg.update_id) is None
            accepted = await post({SECRET_HEADER: WEBHOOK_SECRET})
            assert app.ports["metrics"] != app.ports["webhook"]
            async with http.get(f"http://127.0.0.1:{app.ports['metrics']}/metrics") as resp:
                metrics = await resp.text()
    assert refused == [401, 401, 401]
    assert app.stats.webhook_refused == 3
    assert "bot_webhook_refused_total 3.0" in metrics
    assert accepted == 200
    assert len(api.replies_to(msg.message_id, 91)) == 1


async def test_reply_not_sent_is_redelivered_by_telegram_and_answered_once(
    sqlite_url: str,
) -> None:
    """When the reply cannot be sent, the webhook answers 503; Telegram (the emulator)
    delivers the update again, and the recorded reply goes out once. getUpdates is
    refused with 409 while the webhook is set, as Telegram does."""
    async with emulators() as (api, llm):
        api.webhook_retry_after = 0.1
        settings = webhook_settings(api, llm, sqlite_url)
        api.inject("sendMessage", *[ServerError()] * 5)  # every attempt of telegram-send
        async with replica(settings) as (app, url), aiohttp.ClientSession() as http:
            api.balance([url])
            msg = api.user_says(92, "note: buy bulbs")
            reply = await api.reply(msg)
            await api.wait_until(lambda: api.unconfirmed == 0)
            path = f"{api.url}/bot{settings.bot_token}/getUpdates"
            async with http.post(path) as resp:
                conflict: dict[str, Any] = await resp.json()
    statuses = [d.status for d in api.delivered(msg.update_id)]
    assert statuses[-1] == 200
    assert set(statuses[:-1]) == {503}  # refused until the Bot API took the reply
    assert reply.text == "Noted: buy bulbs (note 1)."
    assert len(api.replies_to(msg.message_id, 92)) == 1
    assert app.stats.messages_in == 1  # decided once; each redelivery sends the recorded reply
    assert app.stats.redelivered == len(statuses) - 1
    assert conflict["error_code"] == 409


async def test_a_stop_cuts_in_flight_requests_off_after_the_grace(sqlite_url: str) -> None:
    """Stopping the bot (SIGTERM cancels it) gives a webhook request still being handled
    ``stop_grace`` to finish, then cuts it off: the stop never waits on a hung LLM, and
    the update, unanswered, stays Telegram's to deliver again."""
    timings = dataclasses.replace(FAST, stop_grace=0.1)
    async with emulators() as (api, llm):
        llm.set_mode(PRIMARY, Latency(60.0))
        llm.set_mode(SECONDARY, Latency(60.0))
        settings = webhook_settings(api, llm, sqlite_url, timings=timings)
        async with replica(settings) as (app, url):
            api.balance([url])
            msg = api.user_says(93, "tell me about ferns")
            await api.wait_until(lambda: app.stats.messages_in == 1)
            stopping = anyio.current_time()
        took = anyio.current_time() - stopping
    assert took < timings.answer_budget / 2  # not the handler's own end (the answer budget)
    assert api.replies_to(msg.message_id, 93) == []
