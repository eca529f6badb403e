"""End to end across a restart of the bot: state, history and unfinished updates carry over."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio
from bot_helpers import PRIMARY, REDIS_URL, emulators, make_settings, part_numbers, running
from examples.telegram_bot.emulators import Delay, Latency, ServerError
from examples.telegram_bot.models import DecisionState
from examples.telegram_bot.stages.sending import split_message
from examples.telegram_bot.stages.tools import ToolBackend

pytestmark = pytest.mark.asyncio


async def test_flow_and_history_survive_a_restart(store: tuple[str, str]) -> None:
    """A reminder started before a restart is finished after it, and the first LLM
    request after the restart carries the turns from before it (SQLite and Redis)."""
    url, prefix = store
    tools = ToolBackend()
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, url)
        async with running(settings, tools=tools, store_prefix=prefix):
            await api.say(21, "what is a good plant for a dark room?")
            await api.say(21, "remind me")
            await api.say(21, "water the fern")
        async with running(settings, tools=tools, store_prefix=prefix) as app:
            conv = await app.store.load(21)
            assert conv.state is DecisionState.AWAITING_INPUT
            assert await api.say(21, "in 2 hours") == (
                "Set a reminder 'water the fern' in 2 hours? (yes/no)"
            )
            assert (await api.say(21, "yes")).startswith(
                "Reminder set: 'water the fern' in 2 hours"
            )
            await api.say(21, "and how much light does it need?")
    assert list(tools.reminders[21].values()) == [("water the fern", "in 2 hours")]
    history = [m["content"] for m in llm.for_model(PRIMARY)[-1].history]
    first_answer = api.chat(21)[0].text
    assert history[:3] == ["what is a good plant for a dark room?", first_answer, "remind me"]
    assert len(history) == 10


async def test_update_cut_short_by_a_crash_is_answered_once_after_restart(
    store: tuple[str, str],
) -> None:
    """An update being handled when the bot dies stays unconfirmed, and the restarted
    bot answers it exactly once."""
    url, prefix = store
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, url)
        llm.script(PRIMARY, Latency(30.0))  # the first answer hangs: the bot dies meanwhile
        async with running(settings, store_prefix=prefix) as app:
            msg = api.user_says(31, "tell me about ferns")
            await api.wait_until(lambda: app.stats.messages_in == 1)
            await anyio.sleep(0.1)
        assert api.replies_to(msg.message_id, 31) == []
        assert api.unconfirmed == 1
        async with running(settings, store_prefix=prefix):
            reply = await api.reply(msg)
            await api.wait_until(lambda: api.unconfirmed == 0)
    assert reply.text.startswith(f"[{PRIMARY}] You asked: tell me about ferns")
    assert len(api.replies_to(msg.message_id, 31)) == 1


async def test_answered_update_offered_again_is_not_answered_twice(sqlite_url: str) -> None:
    """An update Telegram offers again after a restart (its confirmation was lost) is
    recognised from the store and not answered a second time."""
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, sqlite_url)
        async with running(settings):
            msg = api.user_says(41, "note: repot the cactus")
            await api.reply(msg)
            await api.wait_until(lambda: api.unconfirmed == 0)  # handled and confirmed
        api.redeliver(msg)
        async with running(settings) as app:
            await api.wait_until(lambda: api.unconfirmed == 0)
            conv = await app.store.load(41)
    assert len(api.replies_to(msg.message_id, 41)) == 1
    assert app.stats.duplicates_skipped == 1
    assert conv.version == 1


async def test_reply_that_could_not_be_sent_goes_out_after_restart(store: tuple[str, str]) -> None:
    """When every send attempt fails, the decided reply waits in the outbox; after a
    restart it is sent once, and the tool is not run again. (With Redis the restarted
    bot may first find the shared telegram-api breaker still open, and try again.)"""
    url, prefix = store
    tools = ToolBackend()
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, url)
        api.inject("sendMessage", *[ServerError()] * 5)  # every attempt of telegram-send
        async with running(settings, tools=tools, store_prefix=prefix) as app:
            msg = api.user_says(51, "note: buy bulbs")
            await api.wait_until(lambda: app.stats.send_failures >= 1)
        assert api.replies_to(msg.message_id, 51) == []
        async with running(settings, tools=tools, store_prefix=prefix) as app:
            reply = await api.reply(msg)
            await api.wait_until(lambda: api.unconfirmed == 0)
    assert reply.text == "Noted: buy bulbs (note 1)."
    assert len(api.replies_to(msg.message_id, 51)) == 1
    assert tools.calls == 1
    assert app.stats.messages_in == 0  # nothing decided again: the outbox' reply was sent
    assert app.stats.redelivered >= 1


async def test_chat_locked_by_a_dead_process_is_answered_within_the_reply_deadline(
    redis_prefix: str,
) -> None:
    """A process killed while handling a chat leaves its Redis lock behind (SIGKILL runs
    no release): the chat's next message still gets its reply within the deadline, because
    the lock's TTL leaves room for the answer in the budget."""
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, REDIS_URL)
        t = settings.timings
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            async with running(settings, store_prefix=redis_prefix):
                # What a dead holder leaves: its token, with a full TTL (its last
                # extension). Set once the bot runs, so the time it takes to start
                # cannot use up the lock before the message arrives.
                started = anyio.current_time()
                await client.set(
                    f"{redis_prefix}lock:chat:33",
                    "dead-replica:token",
                    px=round(t.chat_lock_ttl * 1000),
                )
                reply = await api.say(33, "tell me about moss", timeout=t.reply_deadline)
                took = anyio.current_time() - started
        finally:
            await client.aclose()
    assert reply.startswith(f"[{PRIMARY}] You asked: tell me about moss")
    assert took >= t.chat_lock_ttl * 0.9  # it did wait for the dead holder's lock


async def test_long_reply_with_a_failed_part_is_finished_after_restart(
    store: tuple[str, str],
) -> None:
    """A reply in three parts whose second part could not be sent (5xx until the
    telegram-api breaker opened) is finished by the restarted bot with the parts not
    yet delivered: each part arrives exactly once, in order, only the first replying
    to the user's message."""
    url, prefix = store
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, url)
        # The first part goes through (Delay(0): answered normally), the second fails.
        api.inject("sendMessage", Delay(0), *[ServerError()] * 5)
        async with running(settings, store_prefix=prefix) as app:
            msg = api.user_says(61, "give me a long answer")
            await api.wait_until(lambda: app.stats.send_failures >= 1)
        parts = split_message(llm.answer(PRIMARY, [{"role": "user", "content": msg.text}]))
        assert len(parts) == 3
        assert part_numbers(api.chat(61), parts) == [(0, msg.message_id)]
        async with running(settings, store_prefix=prefix) as app:
            await api.wait_until(lambda: api.unconfirmed == 0)
    assert part_numbers(api.chat(61), parts) == [(0, msg.message_id), (1, None), (2, None)]
    assert app.stats.messages_in == 0  # nothing decided again: the outbox' reply was sent
    assert app.stats.redelivered >= 1
