"""The composition root: the one place that builds the bot and wires its stages.

Every stage gets its dependencies through its constructor; nothing is global.
Tests and the demo replace any part by passing their own (a tool backend, an
analytics sink, a stats object shared across a restart).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import openai
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from .config import Settings
from .handler import MessageHandler
from .metrics import serve_metrics
from .policies import BotPolicies, build_policies
from .polling import Poller
from .stages.analysis import RuleAnalyzer
from .stages.analytics import Analytics, AnalyticsSink, MemorySink
from .stages.decision import DecisionEngine
from .stages.intake import TextIntake
from .stages.moderation import WordListModerator
from .stages.responder import AnswerCache, ChainResponder, ModelClient
from .stages.sending import TelegramSender
from .stages.tools import ToolBackend, ToolRunner
from .stats import BotStats
from .stores import StateStore, open_store

__all__ = ["BotApp", "open_bot"]

log = logging.getLogger("examples.telegram_bot")


@dataclass(slots=True)
class _Spawner:
    """Starts background work in the running bot's task group (dropped when not running)."""

    group: anyio.abc.TaskGroup | None = None

    def __call__(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self.group is not None:
            self.group.start_soon(fn)


@dataclass(slots=True)
class BotApp:
    """A built bot. ``await app.run()`` polls until cancelled."""

    settings: Settings
    bot: Bot
    store: StateStore
    policies: BotPolicies
    stats: BotStats
    handler: MessageHandler
    poller: Poller
    tools: ToolBackend
    responder: ChainResponder
    spawner: _Spawner = field(default_factory=_Spawner)

    async def run(self) -> None:
        while True:  # the Bot API may be down at boot: wait for it rather than exit
            try:
                me = await self.policies.poll.call(self.bot.get_me)
                break
            except Exception as exc:
                pause = self.settings.timings.poll_backoff_max
                log.warning("getMe failed: %r; trying again in %gs", exc, pause)
                await anyio.sleep(pause)
        log.info("bot @%s polling %s", me.username, self.settings.telegram_api_url)
        async with anyio.create_task_group() as tg:
            self.spawner.group = tg
            try:
                if self.settings.metrics_port is not None:
                    p = self.policies
                    breakers = (p.primary.breaker, p.secondary.breaker, p.telegram_breaker)
                    tg.start_soon(serve_metrics, self.settings.metrics_port, self.stats, breakers)
                tg.start_soon(self._cleanup)
                await self.poller.run()
            finally:
                self.spawner.group = None

    async def _cleanup(self) -> None:
        """Drop conversations idle for longer than the state TTL, every TTL."""
        ttl = self.settings.timings.state_ttl
        while True:
            await anyio.sleep(ttl)
            try:
                removed = await self.store.cleanup_stale(ttl)
                log.info("removed %d stale records", removed)
            except Exception as exc:
                log.warning("cleanup_stale failed: %r", exc)


@asynccontextmanager
async def open_bot(
    settings: Settings,
    *,
    stats: BotStats | None = None,
    tools: ToolBackend | None = None,
    analytics_sink: AnalyticsSink | None = None,
    store_prefix: str = "tgbot:",
) -> AsyncIterator[BotApp]:
    """Build the bot from ``settings``; everything it opened is closed on exit."""
    t = settings.timings
    stats = BotStats() if stats is None else stats
    tools = ToolBackend() if tools is None else tools
    policies = build_policies(t, observers=(stats,))
    async with AsyncExitStack() as stack:
        store = await open_store(
            settings.state_store_url, policy=policies.store, ttl=t.state_ttl, prefix=store_prefix
        )
        stack.push_async_callback(store.aclose)
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
        bot = Bot(settings.bot_token, session=session)
        stack.push_async_callback(session.close)
        # max_retries=0: the openai client would otherwise retry twice on its own,
        # swallowing 429s that our policies (and the secondary model) must see.
        llm = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            max_retries=0,
            timeout=t.llm_client_timeout,
        )
        stack.push_async_callback(llm.close)

        spawner = _Spawner()
        responder = ChainResponder(
            ModelClient(llm, settings.primary_model, policies.primary),
            ModelClient(llm, settings.secondary_model, policies.secondary),
            AnswerCache(),
            history_turns=settings.history_turns,
            reserve=t.fallback_reserve,
            observers=(stats,),
        )
        handler = MessageHandler(
            intake=TextIntake(),
            analyzer=RuleAnalyzer(),
            engine=DecisionEngine(),
            tools=ToolRunner(tools, policies.tools),
            responder=responder,
            moderator=WordListModerator(),
            sender=TelegramSender(bot, policies.send, policies.chat_action, t.send_timeout),
            store=store,
            analytics=Analytics(
                MemorySink() if analytics_sink is None else analytics_sink,
                policies.analytics,
                spawner,
            ),
            stats=stats,
            timings=t,
            history_kept=settings.history_kept,
            spawn=spawner,
        )
        yield BotApp(
            settings=settings,
            bot=bot,
            store=store,
            policies=policies,
            stats=stats,
            handler=handler,
            poller=Poller(bot, handler, policies.poll, t),
            tools=tools,
            responder=responder,
            spawner=spawner,
        )
