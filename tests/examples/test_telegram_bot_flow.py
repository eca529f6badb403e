"""End to end, real aiogram client against the Bot API emulator: conversations keep state."""

from __future__ import annotations

import anyio
import pytest
from bot_helpers import PRIMARY, emulators, make_settings, running
from examples.telegram_bot.emulators import BotAPIEmulator
from examples.telegram_bot.models import DecisionState
from examples.telegram_bot.stages.sending import MAX_MESSAGE
from examples.telegram_bot.stages.tools import ToolBackend

pytestmark = pytest.mark.asyncio


def one_reply_each(api: BotAPIEmulator) -> bool:
    return all(len(api.replies_to(m.message_id, m.chat_id)) == 1 for m in api.received)


async def test_reminder_flow_completes_across_several_messages(sqlite_url: str) -> None:
    """A reminder asked for over four messages is set: state survives between messages
    (the original bot reset every chat after every message)."""
    tools = ToolBackend()
    async with (
        emulators() as (api, llm),
        running(make_settings(api, llm, sqlite_url), tools=tools) as app,
    ):
        assert await api.say(7, "remind me") == "What should I remind you about?"
        conv = await app.store.load(7)
        assert (conv.state, conv.flow, conv.awaiting) == (
            DecisionState.AWAITING_INPUT,
            "reminder",
            "what",
        )
        assert (await api.say(7, "water the plants")).startswith("When should I remind you?")
        assert (await api.say(7, "sometime")).startswith("I didn't get the time.")
        assert await api.say(7, "in 20 minutes") == (
            "Set a reminder 'water the plants' in 20 minutes? (yes/no)"
        )
        assert (await app.store.load(7)).state is DecisionState.AWAITING_CONFIRMATION
        assert (await api.say(7, "yes")).startswith(
            "Reminder set: 'water the plants' in 20 minutes"
        )
        conv = await app.store.load(7)
    assert conv.state is DecisionState.IDLE
    assert conv.flow is None
    assert conv.version == 5
    assert len(conv.history) == 10
    assert list(tools.reminders[7].values()) == [("water the plants", "in 20 minutes")]
    assert app.stats.resets.total() == 0
    assert one_reply_each(api)
    assert not llm.requests  # the steps of a tool flow never go to the LLM


async def test_quick_messages_of_one_chat_lose_no_update(sqlite_url: str) -> None:
    """Five messages of one chat sent at once are handled one by one: all five notes,
    five state versions, ten history entries, one reply each."""
    tools = ToolBackend(latency=0.02)
    async with (
        emulators() as (api, llm),
        running(make_settings(api, llm, sqlite_url), tools=tools) as app,
    ):
        sent = [api.user_says(3, f"note: item {i}") for i in range(5)]
        await api.wait_until(lambda: all(api.replies_to(m.message_id, 3) for m in sent))
        conv = await app.store.load(3)
    assert sorted(tools.notes[3].values()) == [f"item {i}" for i in range(5)]
    assert conv.version == 5
    assert len(conv.history) == 10
    assert [t.text for t in conv.history[::2]] == [f"note: item {i}" for i in range(5)]
    assert one_reply_each(api)


async def test_llm_request_carries_the_history(sqlite_url: str) -> None:
    """Each LLM request carries the chat's earlier turns, user and bot texts as sent."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)):
        said = [f"question number {i}" for i in range(7)]
        replies = [await api.say(11, text) for text in said]
    last = llm.for_model(PRIMARY)[-1]
    assert last.last_user_text == said[-1]
    history = last.history
    assert len(history) >= 10  # at least the 5 turns before the message
    expected = [x for pair in zip(said[:-1], replies[:-1], strict=True) for x in pair][
        -len(history) :
    ]
    assert [m["content"] for m in history] == expected
    assert [m["role"] for m in history[:2]] == ["user", "assistant"]


async def test_reset_clears_state_and_history_and_is_answered(sqlite_url: str) -> None:
    """/reset in the middle of a flow is answered, and leaves the chat IDLE with no history."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        await api.say(5, "hello there")
        await api.say(5, "remind me")
        assert await api.say(5, "/reset") == "Done: I forgot this conversation."
        conv = await app.store.load(5)
        assert conv.state is DecisionState.IDLE
        assert conv.history == []
        assert conv.flow is None
        await api.say(5, "who am I?")
    assert llm.for_model(PRIMARY)[-1].history == ()
    assert app.stats.resets["command"] == 1


async def test_long_answer_is_split_at_telegram_limit(sqlite_url: str) -> None:
    """An answer over 4096 characters goes out in parts; only the first replies."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)):
        msg = api.user_says(9, "give me a long answer")
        await api.reply(msg)
        await anyio.sleep(0.2)  # let the remaining parts arrive
    parts = api.chat(9)
    assert len(parts) == 3
    assert all(len(p.text) <= MAX_MESSAGE for p in parts)
    assert [p.reply_to for p in parts] == [msg.message_id, None, None]
    answer = llm.answer(PRIMARY, [{"role": "user", "content": "give me a long answer"}])
    assert "".join(p.text for p in parts) == answer


async def test_many_chats_each_get_exactly_one_reply_per_message(sqlite_url: str) -> None:
    """Twenty chats talking at once: every message gets exactly one reply, in its own chat."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)):

        async def chat(chat_id: int) -> None:
            for text in ("hi", "remind me", "stretch", "in 5 minutes", "yes", "thanks!"):
                await api.say(chat_id, text)

        async with anyio.create_task_group() as tg:
            for chat_id in range(100, 120):
                tg.start_soon(chat, chat_id)
    assert len(api.received) == 120
    assert one_reply_each(api)
    assert all(api.chat(m.chat_id) for m in api.received)
