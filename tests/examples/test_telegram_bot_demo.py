"""The demo (the README's first command) plays its whole scenario and finds no problem."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from examples.telegram_bot.demo import DEMO_TIMINGS, LEVELS, run_demo, summary


@pytest.mark.asyncio
async def test_demo_scenario_passes_its_own_checks(tmp_path: Path) -> None:
    """Three chats through crash, flood control, rate limits and an outage: every
    message answered once, state carried over, every fallback level used, and the
    secondary model answering both the primary's rate limits and its outage."""
    timings = dataclasses.replace(DEMO_TIMINGS, breaker_open=0.5)
    demo = await run_demo(chats=3, workdir=tmp_path, timings=timings, tool_latency=0.3)
    assert demo.out.problems == []
    assert demo.out.restart_inflight == 3
    assert demo.out.reminders_ok == 3
    assert demo.out.history_ok == 3
    assert all(demo.stats.levels[level] > 0 for level in LEVELS)
    assert demo.stats.levels["secondary"] == 2 * 3  # each chat: a 429, then a 5xx outage
    assert "OK: every message got exactly one reply" in summary(demo)
