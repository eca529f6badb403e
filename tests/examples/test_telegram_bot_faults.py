"""Faults injected into the bot's own policies by name (the ``faults`` fixture of
resilient's pytest plugin): error recovery, the store's retry, best-effort analytics."""

from __future__ import annotations

import sqlite3

import pytest
from bot_helpers import emulators, make_settings, running
from examples.telegram_bot.handler import RECOVERY_TEXT
from examples.telegram_bot.models import DecisionState
from examples.telegram_bot.stages.tools import ToolBackend

from resilient.testing.faults import Faults

pytestmark = pytest.mark.asyncio


async def test_tool_failure_is_error_recovery_with_the_reason_logged(
    sqlite_url: str, faults: Faults, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool that fails resets the chat to IDLE (reason logged) and the user still gets
    an answer; the next reminder starts afresh and works."""
    caplog.set_level("INFO", logger="examples.telegram_bot")
    faults.inject("timeout:tool", error=ConnectionResetError("calendar down"), times=1)
    tools = ToolBackend()
    async with (
        emulators() as (api, llm),
        running(make_settings(api, llm, sqlite_url), tools=tools) as app,
    ):
        await api.say(95, "remind me to call mom in 5 minutes")
        assert await api.say(95, "yes") == RECOVERY_TEXT
        conv = await app.store.load(95)
        assert conv.state is DecisionState.IDLE
        assert conv.flow is None
        await api.say(95, "remind me to call mom in 5 minutes")
        assert (await api.say(95, "yes")).startswith("Reminder set: 'call mom' in 5 minutes")
    assert "error recovery after ConnectionResetError: calendar down" in caplog.text
    assert app.stats.resets["error"] == 1
    assert len(tools.reminders[95]) == 1


async def test_locked_database_is_retried_by_the_store_policy(
    sqlite_url: str, faults: Faults
) -> None:
    """Two 'database is locked' errors on store operations are retried by the
    state-store policy; the message is answered normally."""
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        faults.inject("timeout:state-store-op", error=sqlite3.OperationalError("locked"), times=2)
        assert await api.say(96, "note: lime") == "Noted: lime (note 1)."
    assert app.stats.retries["state-store"] == 2
    assert faults.calls("timeout:state-store-op") >= 3


async def test_slow_analytics_never_delays_or_breaks_a_reply(
    sqlite_url: str, faults: Faults
) -> None:
    """Analytics writes stuck behind a slow sink time out and are dropped; replies flow."""
    faults.latency("timeout:analytics", seconds=5.0)
    async with emulators() as (api, llm), running(make_settings(api, llm, sqlite_url)) as app:
        for i in range(3):
            assert await api.say(97, f"note: n{i}") == f"Noted: n{i} (note {i + 1})."
        await api.wait_until(lambda: app.stats.timeouts["analytics"] == 3, timeout=2.0)
    assert app.stats.replies_out == 3
