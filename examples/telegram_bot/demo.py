"""The offline demo: both emulators, the real bot, a scripted day of trouble, a summary.

``python -m examples.telegram_bot demo`` plays, with ``--chats`` users at once:

1. warm-up: greetings, weather questions, a long answer (split at 4096
   characters), a note (the tool is slow: 0.6 s), and a reminder asked for
   over three messages (what? when?) up to its confirmation;
2. a crash: every chat confirms ("yes"), and the bot is killed while the slow
   tool runs; a new bot starts on the same store and answers each "yes" once
   (the tool is idempotent by update id, so no reminder is set twice);
3. notes under Telegram flood control: 429s with ``retry_after`` and a 502;
4. the primary LLM rate-limits: the secondary answers;
5. the primary fails (5xx): while the secondary fails too, one simplified
   request answers; with the secondary healthy, it answers every chat (the
   primary's breaker opens meanwhile, and the secondary answers on); with
   both models down, cached answers, templates and apologies take over;
6. both models recover: the primary's trial call closes its breaker.

Then it prints a summary table, and exits 1 if any message got no reply or
more than one, if the secondary did not answer during the primary's outage,
or if a conversation lost its state across the restart (a reminder
confirming the wrong task, or an LLM request after the restart without the
turns from before it). Runs in real time, with every duration
of the bot ten times shorter than in production (``Timings.scaled(0.1)``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import redis.asyncio

from resilient import CircuitState

from .app import BotApp, open_bot
from .config import Settings, Timings
from .emulators import (
    BotAPIEmulator,
    LLMEmulator,
    Outage,
    RateLimited,
    RetryAfter,
    ServerError,
)
from .stages.tools import ToolBackend
from .stats import BotStats

__all__ = ["DEMO_TIMINGS", "main", "run_demo"]

TOKEN = "123456:DEMO-token"
PRIMARY = "gpt-4o"
SECONDARY = "gpt-4o-mini"
DEMO_TIMINGS = Timings().scaled(
    0.1, store_timeout=2.0, inflight_poll_interval=0.05, breaker_open=3.0
)
CITIES = ("Paris", "Berlin", "London", "Rome", "Madrid", "Tokyo")
TASKS = ("water the plants", "call mom", "buy milk", "book the dentist", "pay rent", "stretch")
TOPICS = ("ferns", "bonsai", "orchids", "cacti", "tulips", "moss", "ivy", "basil")
LEVELS = ("primary", "secondary", "simplified", "cached", "template", "apology")
PER_CHAT = 15  # messages each chat sends


@dataclass
class Outcome:
    """What the demo saw; ``problems`` non-empty means exit 1."""

    chats: int
    seconds: float = 0.0
    restart_inflight: int = 0
    problems: list[str] = field(default_factory=list)
    reminders_ok: int = 0
    history_ok: int = 0


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, api: BotAPIEmulator, total: int, width: int = 30) -> None:
        self.api, self.total, self.width = api, total, width
        self.phase = ""
        self.tty = sys.stderr.isatty()

    def line(self) -> str:
        done = sum(1 for m in self.api.received if self.api.replies_to(m.message_id, m.chat_id))
        filled = round(self.width * done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {done:>3}/{self.total} replies  {self.phase}"

    def set_phase(self, phase: str) -> None:
        if not self.tty and self.phase:
            print(self.line(), file=sys.stderr)
        self.phase = phase

    async def run(self) -> None:
        while self.tty:
            print("\r" + self.line().ljust(90), end="", file=sys.stderr, flush=True)
            await anyio.sleep(0.1)
        await anyio.sleep_forever()

    def finish(self) -> None:
        end = "\n" if self.tty else ""
        print(("\r" if self.tty else "") + self.line().ljust(90) + end, file=sys.stderr, end="")
        if not self.tty:
            print(file=sys.stderr)


class Demo:
    def __init__(
        self,
        api: BotAPIEmulator,
        llm: LLMEmulator,
        settings: Settings,
        chats: int,
        tool_latency: float,
    ) -> None:
        self.api, self.llm, self.settings = api, llm, settings
        self.chat_ids = [1000 + i for i in range(chats)]
        self.stats = BotStats()  # one book for both bot instances
        self.tools = ToolBackend(latency=tool_latency)  # the slow tool
        self.out = Outcome(chats)
        self.progress = Progress(api, chats * PER_CHAT + 2)
        self.app: BotApp | None = None
        # A fresh key prefix per run: a Redis store must not offer last run's outbox.
        self.prefix = f"tgbot-demo-{uuid.uuid4().hex[:12]}:"
        self.restarted_at = 0.0

    async def say(self, chat_id: int, text: str) -> str:
        try:
            return await self.api.say(chat_id, text, timeout=10.0)
        except TimeoutError:
            self.out.problems.append(f"chat {chat_id}: no reply to {text!r}")
            return ""

    async def each_chat(self, script: Callable[[int, int], Coroutine[Any, Any, None]]) -> None:
        async with anyio.create_task_group() as tg:
            for i, chat_id in enumerate(self.chat_ids):
                tg.start_soon(script, i, chat_id)

    async def start_bot(self, tg: anyio.abc.TaskGroup) -> anyio.CancelScope:
        scope = anyio.CancelScope()

        async def run() -> None:
            with scope:
                async with open_bot(
                    self.settings, stats=self.stats, tools=self.tools, store_prefix=self.prefix
                ) as app:
                    self.app = app
                    await app.run()

        tg.start_soon(run)
        await self.api.wait_until(lambda: self.api.requests["getupdates"] > 0)
        return scope

    async def play(self) -> None:
        started = anyio.current_time()
        api, llm = self.api, self.llm
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.progress.run)
            bot = await self.start_bot(outer)

            self.progress.set_phase("1/6 warm-up, reminders up to their confirmation")

            async def warm_up(i: int, chat_id: int) -> None:
                await self.say(chat_id, greeting(i))
                if i == 0:
                    await self.say(chat_id, "give me a long answer")  # split at 4096 characters
                await self.say(chat_id, f"what's the weather in {CITIES[i % len(CITIES)]}?")
                await self.say(chat_id, f"note: repot the {TOPICS[i % len(TOPICS)]}")
                await self.say(chat_id, "remind me")
                await self.say(chat_id, TASKS[i % len(TASKS)])
                confirm = await self.say(chat_id, "in 10 minutes")
                if confirm != confirmation(i):
                    self.out.problems.append(f"chat {chat_id}: unexpected {confirm!r}")

            await self.each_chat(warm_up)

            self.progress.set_phase("2/6 crash during the slow tool, restart")
            before = self.stats.messages_in
            yeses = [api.user_says(c, "yes") for c in self.chat_ids]
            await api.wait_until(lambda: self.stats.messages_in - before == len(self.chat_ids))
            await anyio.sleep(self.tools.latency / 3)  # every "yes" is mid-way through the tool
            self.out.restart_inflight = sum(
                1 for m in yeses if not api.replies_to(m.message_id, m.chat_id)
            )
            bot.cancel()  # the bot dies with every one of those unfinished
            await anyio.sleep(0.3)
            self.restarted_at = anyio.current_time()
            bot = await self.start_bot(outer)
            for i, m in enumerate(yeses):
                try:
                    done = (await api.reply(m, 10.0)).text
                except TimeoutError:
                    continue  # reported by check()
                if done.startswith(f"Reminder set: '{TASKS[i % len(TASKS)]}' in 10 minutes"):
                    self.out.reminders_ok += 1
                else:
                    self.out.problems.append(f"chat {m.chat_id}: reminder not set: {done!r}")

            self.progress.set_phase("3/6 Telegram flood control")
            api.inject("sendMessage", RetryAfter(1), ServerError(502), RetryAfter(1))

            async def notes(i: int, chat_id: int) -> None:
                await self.say(chat_id, f"note: feed the {TOPICS[(i + 3) % len(TOPICS)]}")
                await self.say(chat_id, "my notes")

            await self.each_chat(notes)

            self.progress.set_phase("4/6 primary LLM rate-limited")
            llm.set_mode(PRIMARY, RateLimited(retry_after=5.0))

            async def rate_limited(i: int, chat_id: int) -> None:
                await self.say(chat_id, question(i))

            await self.each_chat(rate_limited)

            self.progress.set_phase("5/6 primary LLM down (secondary down, up, down)")
            llm.set_mode(PRIMARY, None)
            # The primary fails its network retry's 3 attempts and the secondary fails
            # too: the primary again, with a small request, answers.
            llm.set_mode(SECONDARY, Outage())
            llm.script(PRIMARY, Outage(), Outage(), Outage())
            await self.say(self.chat_ids[0], "which soil is best for ferns?")  # simplified
            # The primary is down, the secondary healthy: the secondary answers every chat,
            # before and after the primary's breaker opens.
            llm.set_mode(PRIMARY, Outage())
            llm.set_mode(SECONDARY, None)

            async def secondary_takes_over(i: int, chat_id: int) -> None:
                reply = await self.say(chat_id, takeover(i))
                if reply and not reply.startswith(f"[{SECONDARY}]"):
                    self.out.problems.append(
                        f"chat {chat_id}: the secondary did not answer the primary's "
                        f"outage: {reply[:60]!r}"
                    )

            await self.each_chat(secondary_takes_over)
            # Both models down: the local levels answer.
            llm.set_mode(SECONDARY, Outage())

            async def outage(i: int, chat_id: int) -> None:
                await self.say(chat_id, question((i + 1) % len(self.chat_ids)))  # cached
                await self.say(chat_id, "what's the weather in Oslo?")  # template
                await self.say(chat_id, "tell me a joke")  # apology

            await self.each_chat(outage)

            self.progress.set_phase("6/6 both LLMs back")
            llm.set_mode(PRIMARY, None)
            llm.set_mode(SECONDARY, None)
            app = self.app
            assert app is not None
            breaker = app.policies.primary.breaker
            with anyio.move_on_after(self.settings.timings.breaker_open + 2.0):
                # The breaker turns HALF_OPEN by the clock alone: look now and then.
                while breaker.state is not CircuitState.HALF_OPEN:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await self.say(self.chat_ids[0], "thanks, what did we talk about?")

            async def recovered(i: int, chat_id: int) -> None:
                if i:
                    await self.say(chat_id, "thanks, what did we talk about?")

            await self.each_chat(recovered)
            await api.wait_until(lambda: api.unconfirmed == 0, 5.0)
            bot.cancel()
            outer.cancel_scope.cancel()
        self.progress.finish()
        self.out.seconds = anyio.current_time() - started
        self.check()

    def check(self) -> None:
        api, out = self.api, self.out
        for m in api.received:
            n = len(api.replies_to(m.message_id, m.chat_id))
            if n != 1:
                out.problems.append(f"chat {m.chat_id}: {n} replies to {m.text!r}")
        for i, chat_id in enumerate(self.chat_ids):
            first = next((r for r in self.llm.requests if r.last_user_text == question(i)), None)
            if first is None or not any(m["content"] == confirmation(i) for m in first.history):
                out.problems.append(
                    f"chat {chat_id}: the first LLM request after the restart "
                    "carried no turns from before it"
                )
            else:
                out.history_ok += 1
            stored = list(self.tools.reminders[chat_id].values())
            if len(stored) != 1:
                out.problems.append(f"chat {chat_id}: {len(stored)} reminders stored, not 1")


def greeting(i: int) -> str:
    return f"hi, I'm user {i}"


def confirmation(i: int) -> str:
    return f"Set a reminder '{TASKS[i % len(TASKS)]}' in 10 minutes? (yes/no)"


def question(i: int) -> str:
    """Chat i's question while the primary is rate-limited (unique, so it can be cached)."""
    return f"how often should I water my {TOPICS[i % len(TOPICS)]}, number {i}?"


def takeover(i: int) -> str:
    """Chat i's question while only the primary is down (shares no words with the others)."""
    return f"can {TOPICS[i % len(TOPICS)]} grow under a lamp indoors?"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(demo: Demo) -> str:
    """The table printed at the end."""
    api, stats, out = demo.api, demo.stats, demo.out
    replies = [api.replies_to(m.message_id, m.chat_id) for m in api.received]
    latencies = [r[0].at - m.at for m, r in zip(api.received, replies, strict=True) if r]
    answered_once = sum(1 for r in replies if len(r) == 1)
    breakers: dict[str, list[str]] = {}
    for t in stats.transitions:
        breakers.setdefault(t.breaker, [t.old]).append(t.new)
    rows: list[tuple[str, list[str]]] = [
        ("chats, messages in", [f"{out.chats} chats, {len(api.received)} messages"]),
        (
            "replies out",
            [
                f"{answered_once} of {len(api.received)} messages answered exactly once",
                f"{len(api.sent)} messages delivered (answers over 4096 characters in parts)",
            ],
        ),
        (
            "answered by",
            [
                " · ".join(f"{lv} {stats.levels.get(lv, 0)}" for lv in LEVELS),
                "without the LLM: "
                + " · ".join(
                    f"{k} {v}" for k, v in sorted(stats.levels.items()) if k not in LEVELS
                ),
            ],
        ),
        (
            "breaker transitions",
            [f"{name}: {' → '.join(states)}" for name, states in breakers.items()] or ["none"],
        ),
        ("retries", [" · ".join(f"{k} {v}" for k, v in sorted(stats.retries.items())) or "none"]),
        (
            "latency msg → reply",
            [
                f"p50 {percentile(latencies, 50):.2f}s · p95 {percentile(latencies, 95):.2f}s"
                f" · p99 {percentile(latencies, 99):.2f}s"
            ],
        ),
        (
            "across the restart",
            [
                f"{out.restart_inflight} updates unfinished at the crash, each answered once after",
                f"{out.reminders_ok}/{out.chats} reminders set with the task given before it",
                f"{out.history_ok}/{out.chats} first LLM requests after it carried earlier turns",
            ],
        ),
        ("took", [f"{out.seconds:.1f}s"]),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["", "resilient example bot: demo summary", "-" * 78]
    for key, values in rows:
        lines.append(f"{key.ljust(width)}  {values[0]}")
        lines += [f"{'':{width}}  {v}" for v in values[1:]]
    lines.append("-" * 78)
    if out.problems:
        lines.append(f"FAILED: {len(out.problems)} problem(s):")
        lines += [f"  - {p}" for p in out.problems[:20]]
    else:
        lines.append("OK: every message got exactly one reply; no conversation lost its state.")
    return "\n".join(lines)


async def run_demo(
    chats: int = 12,
    store_url: str | None = None,
    workdir: Path | None = None,
    *,
    timings: Timings = DEMO_TIMINGS,
    tool_latency: float = 0.6,
) -> Demo:
    """Play the scenario; the caller prints :func:`summary`.

    ``timings`` are the bot's (default :data:`DEMO_TIMINGS`); ``tool_latency``
    is the slow tool's, in seconds (the bot is killed a third of the way in).
    """
    workdir = Path(tempfile.mkdtemp(prefix="tgbot-demo-")) if workdir is None else workdir
    url = store_url or f"sqlite:///{workdir / 'demo.db'}"
    async with BotAPIEmulator(token=TOKEN) as api, LLMEmulator() as llm:
        settings = Settings(
            bot_token=TOKEN,
            telegram_api_url=api.url,
            llm_base_url=llm.url,
            llm_api_key="demo",
            primary_model=PRIMARY,
            secondary_model=SECONDARY,
            state_store_url=url,
            timings=timings,
        )
        demo = Demo(api, llm, settings, chats, tool_latency)
        try:
            await demo.play()
        finally:
            if url.startswith(("redis://", "rediss://")):
                await _drop_keys(url, demo.prefix)
        return demo


async def _drop_keys(url: str, prefix: str) -> None:
    """Delete the demo's keys from Redis."""
    client = redis.asyncio.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.telegram_bot demo")
    parser.add_argument("--chats", type=int, default=12, help="users talking at once (default 12)")
    parser.add_argument(
        "--store", default=None, help="STATE_STORE_URL (default: a temp SQLite file)"
    )
    args = parser.parse_args(argv)
    if args.chats < 1:
        parser.error(f"--chats must be >= 1, got {args.chats}")
    workdir = Path(tempfile.mkdtemp(prefix="tgbot-demo-"))
    log_file = workdir / "demo.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    print(
        f"resilient example bot: offline demo with {args.chats} chats "
        f"(Bot API and LLM emulated on 127.0.0.1; log: {log_file})",
        file=sys.stderr,
    )
    demo = anyio.run(run_demo, args.chats, args.store, workdir, backend="asyncio")
    print(summary(demo))
    return 1 if demo.out.problems else 0
