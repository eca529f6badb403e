"""End to end: sending through Telegram's flood control and errors, delivered exactly once."""

from __future__ import annotations

import dataclasses

import pytest
from bot_helpers import FAST, emulators, make_settings, running
from examples.telegram_bot.emulators import BotAPIEmulator, Delay, RetryAfter, ServerError

pytestmark = pytest.mark.asyncio


def send_log(api: BotAPIEmulator) -> list[tuple[float, int]]:
    return [(e.at, e.status) for e in api.log if e.method == "sendmessage"]


async def test_flood_control_retry_after_is_waited_out_and_delivered_once(sqlite_url: str) -> None:
    """A 429 with retry_after=1 is waited out (at least 1 s) before the same message is
    sent again, and it is delivered exactly once."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        api.inject("sendMessage", RetryAfter(1))
        msg = api.user_says(80, "hello")
        reply = await api.reply(msg, timeout=5.0)
        await api.wait_until(lambda: api.unconfirmed == 0)
    (t429, s429), (t200, s200) = send_log(api)
    assert (s429, s200) == (429, 200)
    assert t200 - t429 >= 1.0
    assert len(api.replies_to(msg.message_id, 80)) == 1
    assert reply.text.startswith("[primary-model] You asked: hello")
    assert app.stats.retries["telegram-send"] == 1
    assert app.stats.replies_out == 1


@pytest.mark.parametrize("fault", [ServerError(502), ServerError(502, json=False)])
async def test_server_errors_are_retried_and_delivered_once(
    sqlite_url: str, fault: ServerError
) -> None:
    """A 5xx, JSON or an HTML error page, is retried; the message arrives once."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        api.inject("sendMessage", fault, fault)
        msg = api.user_says(81, "note: seeds")
        reply = await api.reply(msg)
        await api.wait_until(lambda: api.unconfirmed == 0)
    assert [s for _, s in send_log(api)] == [502, 502, 200]
    assert reply.text == "Noted: seeds (note 1)."
    assert len(api.replies_to(msg.message_id, 81)) == 1
    assert app.stats.retries["telegram-send"] == 2


async def test_slow_send_within_the_timeout_is_not_sent_twice(sqlite_url: str) -> None:
    """A sendMessage slower than usual but within the send timeout is not retried."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        api.inject("sendMessage", Delay(0.2))
        msg = api.user_says(82, "note: soil")
        await api.reply(msg)
        await api.wait_until(lambda: api.unconfirmed == 0)
    assert len(api.replies_to(msg.message_id, 82)) == 1
    assert app.stats.retries["telegram-send"] == 0


async def test_getupdates_errors_are_retried_by_the_poller(sqlite_url: str) -> None:
    """A Bot API that fails getUpdates twice (5xx, then flood control) still gets the
    message answered once."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        await api.say(83, "/help")
        api.inject("getUpdates", ServerError(500), RetryAfter(1))
        msg = api.user_says(83, "note: pots")
        reply = await api.reply(msg, timeout=5.0)
    assert reply.text == "Noted: pots (note 1)."
    assert len(api.replies_to(msg.message_id, 83)) == 1
    assert app.stats.retries["telegram-poll"] == 2


async def test_bot_waits_for_a_bot_api_that_is_down_at_boot(sqlite_url: str) -> None:
    """getMe failing past the poll retry's attempts at start does not stop the bot: it
    tries again, then polls and answers."""
    timings = dataclasses.replace(FAST, poll_backoff_max=0.1)
    async with emulators() as (api, llm):
        api.inject("getMe", *[ServerError(503)] * 6)  # one more than telegram-poll's attempts
        async with running(make_settings(api, llm, sqlite_url, timings)) as app:
            reply = await api.say(84, "note: compost", timeout=5.0)
    assert reply == "Noted: compost (note 1)."
    assert api.requests["getme"] == 7
    assert app.stats.gave_up["telegram-poll"] == 1
