"""End to end: sending through Telegram's flood control and errors, delivered exactly once."""

from __future__ import annotations

import dataclasses

import pytest
from bot_helpers import FAST, PRIMARY, emulators, make_settings, part_numbers, running
from examples.telegram_bot.emulators import BotAPIEmulator, Delay, RetryAfter, ServerError
from examples.telegram_bot.stages.sending import split_message

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


@pytest.mark.parametrize("fault", [ServerError(502), RetryAfter(1)], ids=["5xx", "429"])
async def test_long_reply_whose_second_part_fails_sends_each_part_once(
    store: tuple[str, str], fault: ServerError | RetryAfter
) -> None:
    """A reply in three parts whose second part meets a fault on each of telegram-send's
    five attempts: the send fails (429s: the retry gives up; 5xx: the telegram-api
    breaker opens after the fourth and rejects the fifth), the update is offered again,
    and only the parts not yet delivered are sent. Each part arrives exactly once, in
    order, and only the first replies to the user's message."""
    url, prefix = store
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, url)
        async with running(settings, store_prefix=prefix) as app:
            # The first part goes through (Delay(0): answered normally), the second fails.
            api.inject("sendMessage", Delay(0), *[fault] * 5)
            msg = api.user_says(86, "give me a long answer")
            await api.wait_until(lambda: app.stats.send_failures >= 1, timeout=15.0)
            await api.wait_until(lambda: api.unconfirmed == 0, timeout=15.0)
    parts = split_message(llm.answer(PRIMARY, [{"role": "user", "content": msg.text}]))
    assert len(parts) == 3
    assert part_numbers(api.chat(86), parts) == [(0, msg.message_id), (1, None), (2, None)]
    if isinstance(fault, RetryAfter):
        assert app.stats.gave_up["telegram-send"] == 1
    else:
        assert app.stats.rejections["telegram-api:open"] >= 1
    assert app.stats.redelivered >= 1
    assert app.stats.messages_in == 1  # decided once; the redelivery sent the outbox' reply


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
