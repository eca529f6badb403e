"""Replicas in webhook mode over the machine's Redis: one conversation across them, each
update answered once, one chat handled by one replica at a time, one breaker for all.

Each test uses its own key prefix (the ``redis_prefix`` fixture: skipped without Redis,
failed under CI=true)."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import anyio
import pytest
from bot_helpers import (
    PRIMARY,
    REDIS_URL,
    SECONDARY,
    WEBHOOK_SECRET,
    emulators,
    make_settings,
    replica,
    webhook_settings,
)
from examples.telegram_bot.app import open_bot
from examples.telegram_bot.emulators import Latency, Outage
from examples.telegram_bot.stages.tools import ToolBackend
from examples.telegram_bot.webhook import SECRET_HEADER

from resilient import CircuitState

pytestmark = pytest.mark.asyncio


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> int:
    async with http.post(url, json=body, headers={SECRET_HEADER: WEBHOOK_SECRET}) as resp:
        return resp.status


async def test_two_replicas_continue_one_conversation(redis_prefix: str) -> None:
    """Consecutive messages of one chat land on alternate replicas (a round-robin load
    balancer) and still make one conversation: a reminder flow across four messages,
    and LLM requests carrying the turns each replica saw."""
    tools = ToolBackend()
    async with emulators() as (api, llm):
        settings_a = webhook_settings(api, llm, REDIS_URL, replica_id="a")
        settings_b = dataclasses.replace(settings_a, replica_id="b")
        async with (
            replica(settings_a, tools=tools, store_prefix=redis_prefix) as (a, url_a),
            replica(settings_b, tools=tools, store_prefix=redis_prefix) as (b, url_b),
        ):
            assert api.webhook is not None
            assert api.webhook.secret == WEBHOOK_SECRET
            api.balance([url_a, url_b])
            first = await api.say(61, "what is a good plant for a dark room?")
            assert await api.say(61, "remind me") == "What should I remind you about?"
            assert (await api.say(61, "water the fern")).startswith("When should I remind you?")
            assert await api.say(61, "in 2 hours") == (
                "Set a reminder 'water the fern' in 2 hours? (yes/no)"
            )
            assert (await api.say(61, "yes")).startswith("Reminder set: 'water the fern'")
            await api.say(61, "and how much light does it need?")
    assert [d.url for d in api.deliveries] == [url_a, url_b] * 3
    assert (a.stats.messages_in, b.stats.messages_in) == (3, 3)
    assert list(tools.reminders[61].values()) == [("water the fern", "in 2 hours")]
    history = [m["content"] for m in llm.for_model(PRIMARY)[-1].history]
    assert history[:3] == ["what is a good plant for a dark room?", first, "remind me"]
    assert len(history) == 10


async def test_update_delivered_to_both_replicas_at_once_gets_one_reply(
    redis_prefix: str,
) -> None:
    """One update posted to two replicas at the same moment (and once more later) is
    answered once: the second replica waits for the chat's lock, then finds the reply
    in the outbox; every delivery is acknowledged with 200."""
    async with emulators() as (api, llm):
        settings_a = webhook_settings(api, llm, REDIS_URL, replica_id="a", webhook_url=None)
        settings_b = dataclasses.replace(settings_a, replica_id="b")
        llm.script(PRIMARY, Latency(0.3))  # both deliveries arrive while it is handled
        async with (
            replica(settings_a, store_prefix=redis_prefix) as (a, url_a),
            replica(settings_b, store_prefix=redis_prefix) as (b, url_b),
            aiohttp.ClientSession() as http,
        ):
            msg = api.user_says(71, "tell me about ferns")
            body = api.update_body(msg)
            statuses: list[int] = []

            async def deliver(url: str) -> None:
                statuses.append(await post(http, url, body))

            async with anyio.create_task_group() as tg:
                tg.start_soon(deliver, url_a)
                tg.start_soon(deliver, url_b)
            statuses.append(await post(http, url_b, body))  # Telegram tries once more
    assert statuses == [200, 200, 200]
    assert len(api.replies_to(msg.message_id, 71)) == 1
    assert len(llm.requests) == 1
    assert a.stats.messages_in + b.stats.messages_in == 1
    assert a.stats.duplicates_skipped + b.stats.duplicates_skipped == 2


async def test_one_chat_on_two_replicas_at_once_loses_no_update(redis_prefix: str) -> None:
    """Six messages of one chat posted at once, alternately to two replicas, are handled
    one at a time across both (the chat's lock in Redis): each is answered once, and the
    stored conversation has all six turns (without the lock, replicas would overwrite
    each other's saves)."""
    async with emulators() as (api, llm):
        settings_a = webhook_settings(api, llm, REDIS_URL, replica_id="a", webhook_url=None)
        settings_b = dataclasses.replace(settings_a, replica_id="b")
        llm.set_mode(PRIMARY, Latency(0.05))
        async with (
            replica(settings_a, store_prefix=redis_prefix) as (a, url_a),
            replica(settings_b, store_prefix=redis_prefix) as (_, url_b),
            aiohttp.ClientSession() as http,
        ):
            msgs = [api.user_says(81, f"question number {i}") for i in range(6)]
            statuses: list[int] = []

            async def deliver(url: str, body: dict[str, Any]) -> None:
                statuses.append(await post(http, url, body))

            async with anyio.create_task_group() as tg:
                for i, m in enumerate(msgs):
                    tg.start_soon(deliver, (url_a, url_b)[i % 2], api.update_body(m))
            conv = await a.store.load(81)
    assert statuses == [200] * 6
    assert all(len(api.replies_to(m.message_id, 81)) == 1 for m in msgs)
    assert conv.version == 6
    assert sorted(t.text for t in conv.history if t.role == "user") == [m.text for m in msgs]


async def test_llm_outage_seen_by_one_replica_opens_the_breaker_for_all(
    redis_prefix: str,
) -> None:
    """Replica a alone sees the primary model fail and opens its breaker; replica b,
    which never called the model, finds its own llm-primary breaker open through the
    shared Redis breaker store, and answers from the secondary model without calling
    the primary."""
    async with emulators() as (api, llm):
        settings_a = webhook_settings(api, llm, REDIS_URL, replica_id="a")
        settings_b = dataclasses.replace(settings_a, replica_id="b")
        llm.set_mode(PRIMARY, Outage())
        async with (
            replica(settings_a, store_prefix=redis_prefix) as (a, url_a),
            replica(settings_b, store_prefix=redis_prefix) as (b, url_b),
        ):
            assert a.policies.shared_breakers
            api.balance([url_a])
            for i in range(4):  # 3 failed calls each (the secondary answers): 10 open it
                await api.say(111, f"tell me about moss, part {i}")
            assert a.policies.primary.breaker.state is CircuitState.OPEN
            with anyio.fail_after(2):
                while b.policies.primary.breaker.state is not CircuitState.OPEN:
                    await anyio.sleep(0.01)
            calls = len(llm.for_model(PRIMARY))
            api.balance([url_b])
            answer = await api.say(112, "what's the weather in Oslo?")
            health = (await b.health.check())[1]
    assert answer.startswith(f"[{SECONDARY}] You asked: what's the weather in Oslo?")
    assert len(llm.for_model(PRIMARY)) == calls
    assert b.stats.messages_in == 1
    assert health["breakers"]["llm-primary"] == "open"
    assert health["breaker_store"] == {"kind": "RedisStore", "degraded": False}


async def test_bot_on_redis_stopped_by_cancellation_leaves_its_caller_running(
    redis_prefix: str,
) -> None:
    """Cancelling a bot on Redis (as SIGTERM does) stops it, shared breaker store
    included, and the cancellation stays inside the bot's scope: the caller goes on,
    and a restarted bot continues the conversation."""
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, REDIS_URL)
        async with anyio.create_task_group() as outer:
            for text in ("hello", "hello again"):
                scope = anyio.CancelScope()
                stopped = anyio.Event()

                async def bot(scope: anyio.CancelScope, stopped: anyio.Event) -> None:
                    with scope:
                        async with open_bot(settings, store_prefix=redis_prefix) as app:
                            await app.run()
                    stopped.set()

                outer.start_soon(bot, scope, stopped)
                answer = await api.say(121, text)
                scope.cancel()
                with anyio.fail_after(5):
                    await stopped.wait()
            assert not outer.cancel_scope.cancel_called
    assert answer.endswith("(I see 2 earlier messages.)")
