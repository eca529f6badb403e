"""End to end: every level of the LLM fallback chain is reached by an injected fault and answers."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from bot_helpers import FAST, PRIMARY, SECONDARY, emulators, make_settings, running
from examples.telegram_bot.emulators import Latency, Outage, RateLimited, echo_answer
from examples.telegram_bot.stages.moderation import APOLOGY
from examples.telegram_bot.stages.responder import CACHED_LABEL

from resilient import CircuitState

pytestmark = pytest.mark.asyncio


async def test_primary_answers_when_healthy(sqlite_url: str) -> None:
    """No fault: the primary model answers, with the normal token budget."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        reply = await api.say(60, "what is a fern?")
    assert reply.startswith(f"[{PRIMARY}] You asked: what is a fern?")
    assert app.stats.levels == {"primary": 1}
    assert [r.max_tokens for r in llm.requests] == [600]


async def test_short_rate_limit_is_waited_out_on_the_primary(sqlite_url: str) -> None:
    """A 429 whose Retry-After fits the rate-limit retry's deadline is waited out (the
    hint, not the backoff, sets the wait) and the primary answers."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        llm.script(PRIMARY, RateLimited(retry_after=0.15))
        reply = await api.say(61, "what is moss?")
    assert reply.startswith(f"[{PRIMARY}]")
    first, second = llm.for_model(PRIMARY)
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.15
    assert app.stats.retries["llm-primary-rate-limit"] == 1
    assert app.stats.levels == {"primary": 1}


async def test_secondary_answers_when_the_primary_is_rate_limited(sqlite_url: str) -> None:
    """A 429 with a Retry-After beyond the wait we allow sends the request to the
    secondary model at once."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        llm.set_mode(PRIMARY, RateLimited(retry_after=5.0))
        reply = await api.say(62, "what is a cactus?")
    assert reply.startswith(f"[{SECONDARY}] You asked: what is a cactus?")
    assert app.stats.levels == {"secondary": 1}
    assert app.stats.gave_up["llm-primary-rate-limit"] == 1
    assert len(llm.for_model(PRIMARY)) == 1


async def test_secondary_answers_when_the_primary_fails(sqlite_url: str) -> None:
    """A primary failing with 5xx through its network retry's 3 attempts: the secondary
    model answers, with the full request (not the simplified one)."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        llm.set_mode(PRIMARY, Outage(502))
        reply = await api.say(63, "what is a palm?")
    assert reply.startswith(f"[{SECONDARY}] You asked: what is a palm?")
    assert app.stats.levels == {"secondary": 1}
    assert app.stats.retries["llm-primary-network"] == 2
    assert [r.status for r in llm.for_model(PRIMARY)] == [502, 502, 502]
    (asked,) = llm.for_model(SECONDARY)
    assert (asked.max_tokens, asked.temperature, asked.status) == (600, 0.7, 200)


async def test_secondary_answers_when_the_primary_breaker_is_open(sqlite_url: str) -> None:
    """The primary's breaker open: the primary is not called, the secondary answers."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        app.policies.primary.breaker.force_open()
        reply = await api.say(72, "what is a palm?")
    assert reply.startswith(f"[{SECONDARY}] You asked: what is a palm?")
    assert app.stats.levels == {"secondary": 1}
    assert llm.for_model(PRIMARY) == []


@pytest.mark.parametrize("empty", ["", "  \n "])
async def test_secondary_answers_when_the_primary_answers_no_text(
    sqlite_url: str, empty: str
) -> None:
    """A primary answering 200 with no text: the secondary answers instead."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        llm.answer = lambda model, messages: (
            empty if model == PRIMARY else echo_answer(model, messages)
        )
        reply = await api.say(73, "what is a palm?")
    assert reply.startswith(f"[{SECONDARY}] You asked: what is a palm?")
    assert app.stats.levels == {"secondary": 1}
    assert [r.status for r in llm.for_model(PRIMARY)] == [200]  # no retry of an empty answer


async def test_simplified_answers_when_the_primary_and_the_secondary_fail(
    sqlite_url: str,
) -> None:
    """Both models failing: the simplified request, a small, cool request to the
    primary again, is the next level, and answers once the primary's blip is over."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        llm.script(PRIMARY, Outage(), Outage(), Outage())  # the network retry's 3 attempts
        llm.set_mode(SECONDARY, Outage())
        reply = await api.say(74, "what is a palm?")
    assert reply.startswith(f"[{PRIMARY}] You asked: what is a palm?")
    assert app.stats.levels == {"simplified": 1}
    assert app.stats.retries["llm-primary-network"] == 2
    assert app.stats.retries["llm-secondary-network"] == 2
    assert [r.status for r in llm.for_model(SECONDARY)] == [500, 500, 500]
    last = llm.requests[-1]
    assert (last.model, last.max_tokens, last.temperature, last.status) == (
        PRIMARY,
        120,
        0.2,
        200,
    )


@pytest.mark.parametrize(
    "down",
    [Latency(60.0), Outage(503), RateLimited(retry_after=0.3)],
    ids=["hanging", "5xx", "rate-limited"],
)
async def test_secondary_that_is_down_too_keeps_the_reply_in_time(
    sqlite_url: str, down: Latency | Outage | RateLimited
) -> None:
    """The primary failing at once and the secondary down too, whichever way: the
    secondary's retries (and waits) stop with the answer budget, and the apology still
    goes out within the reply deadline."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        llm.set_mode(PRIMARY, Outage())
        llm.set_mode(SECONDARY, down)
        asked = api.user_says(75, "tell me a story")
        reply = await api.reply(asked, timeout=FAST.reply_deadline * 3)
    assert reply.text == APOLOGY
    assert reply.at - asked.at < FAST.reply_deadline
    assert app.stats.levels == {"apology": 1}
    # The secondary was asked, and retried (a hanging request is never recorded by the
    # emulator: it is cut off first).
    assert sum(n for name, n in app.stats.retries.items() if name.startswith("llm-secondary"))
    assert max(r.at for r in llm.requests) - asked.at < FAST.answer_budget


async def test_cached_template_and_apology_answer_when_both_models_are_down(
    sqlite_url: str,
) -> None:
    """With both models down: a question like an earlier one gets the earlier answer,
    labelled as cached; a weather question gets its template; anything else the apology."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        fresh = await api.say(64, "What is the capital of France?")
        llm.set_mode(PRIMARY, Outage())
        llm.set_mode(SECONDARY, Outage())
        cached = await api.say(65, "what's the capital of france")
        template = await api.say(66, "what's the weather in Rome?")
        apology = await api.say(67, "tell me a joke")
    assert cached == CACHED_LABEL + fresh
    assert template == (
        "I can't reach the weather service right now for Rome. Please try again in a few minutes."
    )
    assert apology == APOLOGY
    assert app.stats.levels == {"primary": 1, "cached": 1, "template": 1, "apology": 1}


async def test_cached_answer_needs_the_same_entities(sqlite_url: str) -> None:
    """A Berlin answer is never reused for Paris, however similar the words."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        await api.say(68, "what's the weather in Berlin?")
        llm.set_mode(PRIMARY, Outage())
        llm.set_mode(SECONDARY, Outage())
        reply = await api.say(69, "what's the weather in Paris?")
    assert reply.startswith("I can't reach the weather service right now for Paris")
    assert app.stats.levels == {"primary": 1, "template": 1}


async def test_secondary_answers_when_the_primary_hangs(sqlite_url: str) -> None:
    """A primary that never answers is cut off at its share of the answer budget
    (``primary_budget``), which leaves the secondary a full attempt: the secondary
    answers, in time, from the first message on (no need to wait for the primary's
    breaker to open)."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        llm.set_mode(PRIMARY, Latency(60.0))
        asked = api.user_says(76, "what is a palm?")
        reply = await api.reply(asked, timeout=FAST.reply_deadline * 3)
    assert reply.text.startswith(f"[{SECONDARY}] You asked: what is a palm?")
    assert reply.at - asked.at < FAST.reply_deadline
    assert app.stats.levels == {"secondary": 1}
    (answered,) = llm.for_model(SECONDARY)
    # Asked once the primary's share was spent, with a full attempt's time still left.
    assert answered.at - asked.at >= FAST.primary_budget
    assert answered.at - asked.at < FAST.answer_budget - FAST.fallback_reserve


async def test_hanging_models_still_get_an_answer_before_the_deadline(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models that never answer are cut off, and a local level answers: the reply
    comes though each model call would take a minute. The primary is cut off at its
    share of the budget and the secondary is asked; the secondary is cut off by the
    answer budget, so the simplified request is not sent."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        # The emulator records a request only when it answers: count the calls instead.
        calls: list[str] = []
        for client in (app.responder.primary, app.responder.secondary):
            complete = client.complete

            async def counted(
                *args: Any, _model: str = client.model, _complete: Any = complete, **kwargs: Any
            ) -> str:
                calls.append(_model)
                return await _complete(*args, **kwargs)

            monkeypatch.setattr(client, "complete", counted)
        llm.set_mode(PRIMARY, Latency(60.0))
        llm.set_mode(SECONDARY, Latency(60.0))
        asked = api.user_says(70, "tell me a story")
        reply = await api.reply(asked, timeout=FAST.reply_deadline * 3)
    assert reply.text == APOLOGY
    assert reply.at - asked.at < FAST.reply_deadline
    assert app.stats.levels == {"apology": 1}
    assert calls == [PRIMARY, SECONDARY]


async def test_primary_breaker_opens_in_an_outage_and_closes_after_it(sqlite_url: str) -> None:
    """In an outage the primary's breaker opens (10 failed calls: 3 per message) and
    the primary is no longer called; the secondary answers throughout. Once the
    outage is over, a trial call closes the breaker again."""
    timings = dataclasses.replace(FAST, breaker_open=0.3)
    async with emulators() as (api, llm):
        settings = make_settings(api, llm, sqlite_url, timings)
        async with running(settings) as app:
            breaker = app.policies.primary.breaker
            llm.set_mode(PRIMARY, Outage())
            for i in range(4):
                reply = await api.say(71, f"question {i}")
                assert reply.startswith(f"[{SECONDARY}] You asked: question {i}")
            assert breaker.state is CircuitState.OPEN
            calls = len(llm.for_model(PRIMARY))
            reply = await api.say(71, "one more question")
            assert reply.startswith(f"[{SECONDARY}] You asked: one more question")
            assert len(llm.for_model(PRIMARY)) == calls  # rejected without a call
            llm.set_mode(PRIMARY, None)
            await api.wait_until(lambda: breaker.state is CircuitState.HALF_OPEN, timeout=2.0)
            reply = await api.say(71, "are you back?")
            assert breaker.state is CircuitState.CLOSED
    assert reply.startswith(f"[{PRIMARY}]")
    assert [(t.old, t.new) for t in app.stats.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
