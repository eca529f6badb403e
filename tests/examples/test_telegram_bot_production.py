"""Operating the bot: feature flags, configuration, secrets kept out of logs, abuse limits,
admin commands, /metrics and /health."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import aiohttp
import anyio
import pytest
from bot_helpers import (
    FAST,
    PRIMARY,
    ROOT,
    SECONDARY,
    TOKEN,
    emulators,
    make_settings,
    running,
)
from examples.telegram_bot.config import ConfigError, Limits, Settings, Timings
from examples.telegram_bot.emulators import Outage, RateLimited, ServerError
from examples.telegram_bot.flags import FLAGS, Flag, Flags, rollout_bucket
from examples.telegram_bot.handler import RATE_LIMITED_TEXT, TOO_LONG_TEXT
from examples.telegram_bot.redact import MASK, redacting
from examples.telegram_bot.stages.admin import REFUSED_TEXT
from examples.telegram_bot.stages.moderation import APOLOGY
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

# --- feature flags ---------------------------------------------------------------------

# 10,000 synthetic chats: users (positive ids) and groups (negative ids), spread out.
CHATS = [12_345 + 7_919 * i for i in range(5_000)] + [
    -1_000_000_000_000 - 104_729 * i for i in range(5_000)
]


@pytest.mark.parametrize("percentage", [1.0, 10.0, 25.0, 50.0, 75.0, 99.0])
def test_flag_rolls_out_to_its_share_of_chats(percentage: float) -> None:
    """A flag at p % is on for p % of 10,000 synthetic chats, within 2 points."""
    flags = Flags({"secondary_llm": Flag(percentage=percentage)})
    share = sum(flags.is_on("secondary_llm", c) for c in CHATS) / len(CHATS) * 100
    assert abs(share - percentage) <= 2.0


def test_rollout_hash_is_pinned() -> None:
    """The rollout bucket is SHA-256 of "<flag>:<chat id>" (not Python's salted hash()):
    every replica and every restart puts a chat in the same place."""
    assert rollout_bucket("secondary_llm", 42) == pytest.approx(33.50488320803635)
    assert rollout_bucket("fallback_cached", -1001234567890) == pytest.approx(52.5387013850107)


@given(
    chat=st.sampled_from(CHATS),
    low=st.floats(0, 100),
    high=st.floats(0, 100),
    allowed=st.booleans(),
    denied=st.booleans(),
    enabled=st.booleans(),
)
def test_flag_decision_order(
    chat: int, low: float, high: float, allowed: bool, denied: bool, enabled: bool
) -> None:
    """Deny wins; a disabled flag is off; allow wins over the percentage; otherwise a chat
    in the rollout at a percentage stays in it at any higher one."""
    low, high = min(low, high), max(low, high)
    lists = {
        "allow": frozenset({chat} if allowed else ()),
        "deny": frozenset({chat} if denied else ()),
    }
    at_low = Flag(enabled=enabled, percentage=low, **lists).is_on("secondary_llm", chat)
    at_high = Flag(enabled=enabled, percentage=high, **lists).is_on("secondary_llm", chat)
    if denied or not enabled:
        assert (at_low, at_high) == (False, False)
    elif allowed:
        assert (at_low, at_high) == (True, True)
    else:
        assert at_high >= at_low
        assert at_low == (rollout_bucket("secondary_llm", chat) < low or low == 100.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"secondary_lm": True}, "flags.secondary_lm: unknown flag 'secondary_lm'"),
        ({"secondary_llm": {"percentage": 101}}, "percentage must be a number from 0 to 100"),
        ({"secondary_llm": {"percent": 5}}, "unknown keys ['percent']"),
        ({"fallback_cached": {"allow": "12"}}, "allow must be a list of chat ids"),
        ({"fallback_cached": "on"}, "must be true, false, a percentage or a table"),
    ],
)
def test_bad_flags_name_the_flag_and_the_value(data: dict[str, object], message: str) -> None:
    """A typo in the flags is an error naming the flag, never a silent default."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Flags.parse(data)


# --- configuration --------------------------------------------------------------------


def test_settings_from_file_and_environment(tmp_path: Path) -> None:
    """A TOML file (BOT_CONFIG) gives settings, flags and timings; the environment wins."""
    path = tmp_path / "bot.toml"
    path.write_text(
        'bot_token = "1:from-file"\n'
        'bot_mode = "webhook"\n'
        'webhook_secret = "s3cret-from-file"\n'
        "admin_ids = [7, 8]\n"
        'chat_rate_limit = "5/10"\n'
        "[flags.secondary_llm]\npercentage = 25\ndeny = [99]\n"
        "[timings]\nllm_attempt_timeout = 8\n"
    )
    s = Settings.from_env(
        {"BOT_CONFIG": str(path), "BOT_TOKEN": "1:from-env", "ADMIN_IDS": "9, 10"}
    )
    assert (s.bot_token, s.mode, s.webhook_secret) == ("1:from-env", "webhook", "s3cret-from-file")
    assert s.limits == Limits(rate_messages=5, rate_window=10.0, admin_ids=frozenset({9, 10}))
    assert s.flags.flags["secondary_llm"] == Flag(percentage=25.0, deny=frozenset({99}))
    assert s.timings.llm_attempt_timeout == 8.0


def test_default_limits_keep_every_message_for_the_llm() -> None:
    """By default (the bot's contract) nothing is refused: no rate limit, and the length
    limit is Telegram's own; CHAT_RATE_LIMIT=off says so explicitly."""
    limits = Settings.from_env({"BOT_TOKEN": "1:a"}).limits
    assert (limits.rate_messages, limits.max_message_length) == (None, 4096)
    env = {"BOT_TOKEN": "1:a", "CHAT_RATE_LIMIT": "20/60", "MAX_MESSAGE_LENGTH": "500"}
    assert Settings.from_env(env).limits == Limits(500, 20, 60.0)
    assert Settings.from_env(env | {"CHAT_RATE_LIMIT": "off"}).limits.rate_messages is None


def test_every_configuration_problem_is_reported_at_once_without_secrets() -> None:
    """Start-up validation lists each mistake with the variable's name; a malformed
    token or webhook secret is described, never shown."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "BOT_TOKEN": "1:a",
                "WEBHOOK_PORT": "eighty",
                "CHAT_RATE_LIMIT": "fast",
                "BOT_FLAGS": '{"secondary_llm": 300}',
                "SHARED_BREAKERS": "maybe",
            }
        )
    text = str(caught.value)
    assert len(caught.value.problems) == 4
    for name in ("WEBHOOK_PORT", "CHAT_RATE_LIMIT", "BOT_FLAGS", "SHARED_BREAKERS"):
        assert name in text
    bad_token = "my token is hunter2"
    with pytest.raises(ValueError, match="BOT_TOKEN") as caught_token:
        Settings.from_env({"BOT_TOKEN": bad_token})
    assert bad_token not in str(caught_token.value)
    with pytest.raises(ValueError, match="WEBHOOK_SECRET") as caught_secret:
        Settings.from_env({"BOT_TOKEN": "1:a", "BOT_MODE": "webhook", "WEBHOOK_SECRET": "a b!"})
    assert "a b!" not in str(caught_secret.value)
    with pytest.raises(ValueError, match="webhook_secret must be set in webhook mode"):
        Settings.from_env({"BOT_TOKEN": "1:a", "BOT_MODE": "webhook"})
    # Rules across values are reported together too, not just the first broken one.
    with pytest.raises(ConfigError) as caught_rules:
        Settings.from_env(
            {"BOT_TOKEN": "1:a", "BOT_MODE": "webhook", "WEBHOOK_MAX_CONNECTIONS": "101"}
        )
    rules = caught_rules.value.problems
    assert len(rules) == 2
    assert "webhook_secret must be set" in rules[0]
    assert "webhook_max_connections must be 1..100, got 101" in rules[1]


def test_settings_repr_shows_no_secret() -> None:
    """Printing the settings (a debugger, an error report) shows no token, key or secret."""
    s = Settings(
        bot_token=TOKEN, llm_api_key="sk-very-secret", webhook_secret="hook-secret", mode="webhook"
    )
    text = repr(s)
    assert TOKEN not in text
    assert "sk-very-secret" not in text
    assert "hook-secret" not in text


# --- secrets never logged ---------------------------------------------------------------


def test_secrets_are_masked_in_every_log_record(caplog: pytest.LogCaptureFixture) -> None:
    """Inside redacting(), a secret in a message, its arguments, its URL-encoded form or an
    exception's traceback, from any logger, reaches no handler; outside it, nothing is
    changed."""
    factory = logging.getLogRecordFactory()
    other = logging.getLogger("aiohttp.client")
    with caplog.at_level(logging.DEBUG), redacting([TOKEN, None, ""]):
        other.warning(f"GET https://api.telegram.org/bot{TOKEN}/getMe failed")
        other.warning("GET %s failed", f"/bot{TOKEN}/getUpdates")
        other.warning("encoded: /bot%s/x", "123456%3ATEST-token")
        try:
            raise RuntimeError(f"Content: <html>/bot{TOKEN}/sendMessage</html>")
        except RuntimeError:
            other.exception("send failed")
    assert logging.getLogRecordFactory() is factory
    assert TOKEN not in caplog.text
    assert "123456%3ATEST-token" not in caplog.text
    assert caplog.text.count(MASK) == 4


@pytest.mark.asyncio
async def test_token_never_appears_in_captured_logs_of_a_failing_bot(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The Bot API answers sendMessage with an HTML page naming the request path (so the
    token is in the error aiogram raises, and in the bot's warning about it): the captured
    log shows the warning with the token masked."""
    async with emulators() as (api, llm):
        timings = dataclasses.replace(FAST, send_backoff_initial=0.01, send_backoff_max=0.02)
        settings = make_settings(api, llm, sqlite_url, timings)
        api.inject("sendMessage", *[ServerError(502, json=False)] * 5)
        with caplog.at_level(logging.DEBUG):
            async with running(settings) as app:
                reply = await api.say(31, "note: water the ferns")
    assert reply == "Noted: water the ferns (note 1)."
    assert app.stats.send_failures == 1
    assert "reply not sent, will try again: ClientDecodeError" in caplog.text
    assert f"Bad Gateway: /bot{MASK}/sendMessage" in caplog.text
    assert TOKEN not in caplog.text


# --- abuse limits and admin commands --------------------------------------------------


@pytest.mark.asyncio
async def test_abuse_limits_answer_with_a_notice_instead_of_the_llm(sqlite_url: str) -> None:
    """A message over the length limit, and one over the chat's rate, get a polite notice
    and no LLM call; once its oldest messages leave the window, the chat is served again."""
    async with emulators() as (api, llm):
        limits = Limits(max_message_length=40, rate_messages=3, rate_window=0.6)
        settings = dataclasses.replace(make_settings(api, llm, sqlite_url), limits=limits)
        async with running(settings) as app:
            long_text = "why " * 11
            assert await api.say(40, long_text) == TOO_LONG_TEXT.format(
                length=len(long_text.strip()), limit=40
            )
            for i in range(3):
                assert (await api.say(40, f"question {i}")).startswith(f"[{PRIMARY}]")
            assert await api.say(40, "question 3") == RATE_LIMITED_TEXT.format(seconds=1)
            assert len(llm.requests) == 3
            await anyio.sleep(0.65)
            assert (await api.say(40, "question 4")).startswith(f"[{PRIMARY}]")
            history = [t.text for t in (await app.store.load(40)).history if t.role == "user"]
    assert dict(app.stats.notices) == {"too_long": 1, "rate_limited": 1}
    assert history == ["question 0", "question 1", "question 2", "question 4"]


@pytest.mark.asyncio
async def test_admin_commands_only_for_admin_ids(sqlite_url: str) -> None:
    """/stats and /flags answer the user ids in ADMIN_IDS; anyone else is refused politely,
    and neither reaches the LLM."""
    async with emulators() as (api, llm):
        settings = dataclasses.replace(
            make_settings(api, llm, sqlite_url),
            limits=Limits(admin_ids=frozenset({501})),
            flags=Flags({"fallback_cached": Flag(enabled=False)}),
        )
        async with running(settings):
            refused = await api.say(500, "/stats")
            stats = await api.say(501, "/stats")
            flags = await api.say(501, "/flags@resilient_demo_bot")
    assert refused == REFUSED_TEXT.format(command="/stats")
    assert stats.startswith("Replica ")
    assert "Health score: 1.00" in stats
    assert flags.splitlines()[0] == "Flags for chat 501:"
    assert "off fallback_cached" in flags
    assert "on  secondary_llm" in flags
    assert llm.requests == []


@pytest.mark.asyncio
async def test_flags_switch_the_secondary_llm_and_fallback_levels_per_chat(
    sqlite_url: str,
) -> None:
    """With the primary rate-limited, and again with it down, the chat allowed the
    secondary model gets its answer, the others (at 0 %) do not; with the primary down,
    a chat denied the template level gets the apology instead of the weather template."""
    flags = Flags.parse(
        {
            "secondary_llm": {"percentage": 0, "allow": [601]},
            "fallback_template": {"deny": [602]},
        }
    )
    async with emulators() as (api, llm):
        settings = dataclasses.replace(make_settings(api, llm, sqlite_url), flags=flags)
        async with running(settings):
            llm.set_mode(PRIMARY, RateLimited(retry_after=30.0))
            allowed = await api.say(601, "how are ferns doing")
            others = await api.say(603, "how are ferns doing")
            llm.set_mode(PRIMARY, Outage())
            allowed_down = await api.say(601, "what's the weather in Rome?")
            templated = await api.say(603, "what's the weather in Oslo?")
            denied = await api.say(602, "what's the weather in Oslo?")
    assert allowed.startswith(f"[{SECONDARY}]")
    assert not others.startswith(f"[{SECONDARY}]")
    assert allowed_down.startswith(f"[{SECONDARY}]")
    assert len(llm.for_model(SECONDARY)) == 2
    assert templated.startswith("I can't reach the weather service right now")
    assert denied == APOLOGY


# --- /metrics and /health -------------------------------------------------------------


@pytest.mark.asyncio
async def test_metrics_and_health(sqlite_url: str) -> None:
    """/metrics has the library's metrics (PrometheusObserver) and the bot's own counters
    (messages, replies, levels, state transitions) on the bot's registry; /health has the
    library's health score and the store's reachability, and says 503 without the store."""
    async with emulators() as (api, llm):
        settings = dataclasses.replace(make_settings(api, llm, sqlite_url), metrics_port=0)
        async with running(settings) as app, aiohttp.ClientSession() as http:
            await api.say(70, "hello there")
            await api.say(70, "remind me")
            with anyio.fail_after(5):
                await app.ready.wait()
            base = f"http://127.0.0.1:{app.ports['metrics']}"
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            async with http.get(f"{base}/health") as resp:
                healthy = (resp.status, json.loads(await resp.text()))
            await app.store.aclose()
            async with http.get(f"{base}/health") as resp:
                broken = (resp.status, json.loads(await resp.text()))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("bot_messages_in_total", ())] == 2
    assert samples[("bot_replies_out_total", ())] == 2
    assert samples[("bot_answers_total", (("level", "primary"),))] == 1
    assert (
        samples[("bot_state_transitions_total", (("from", "idle"), ("to", "awaiting_input")))] == 1
    )
    assert samples[("bot_health_score", ())] == 1.0
    key = ("kind", "circuit_breaker"), ("name", "llm-primary"), ("outcome", "success")
    assert samples[("resilient_calls_total", key)] == 1
    assert samples[("resilient_circuit_breaker_state", (("name", "llm-primary"),))] == 0
    status, body = healthy
    assert status == 200
    assert (body["status"], body["health_score"], body["store"]["reachable"]) == ("ok", 1.0, True)
    assert body["breakers"]["llm-primary"] == "closed"
    assert body["breaker_store"] is None
    status, body = broken
    assert (status, body["status"], body["store"]["reachable"]) == (503, "unavailable", False)


def test_every_flag_is_documented() -> None:
    """Each flag the bot reads has a row in the production docs' table of flags."""
    page = (ROOT / "docs" / "bot-production.md").read_text()
    rows = {line.split("`")[1] for line in page.splitlines() if line.startswith("| `")}
    assert set(FLAGS) <= rows


def test_timings_that_break_the_budget_split_are_refused_naming_the_rule() -> None:
    """The answer budget must leave time to send; the primary's share must leave the
    secondary a full attempt. Scaled timings (the demo's, the tests') keep both."""
    with pytest.raises(ValueError, match=r"answer_budget \(22.0\) must be < reply_deadline"):
        Timings(reply_deadline=20.0)
    with pytest.raises(ValueError, match=r"\(26.0\) must be <= answer_budget \(22.0\)"):
        Timings(primary_budget=15.0)
    for factor in (0.01, 0.05, 0.1, 0.3):
        Timings().scaled(factor)
