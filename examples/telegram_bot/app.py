"""The composition root: the one place that builds the bot and wires its stages.

Every stage gets its dependencies through its constructor; nothing is global.
Tests and the demo replace any part by passing their own (a tool backend, an
analytics sink, a stats object shared across a restart).

With a Redis state store (``STATE_STORE_URL=redis://…``) one Redis client
serves the conversations, the per-chat locks and the breaker store, so
replicas share all three; with SQLite everything stays in the process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import openai
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.methods.base import Response
from aiogram.types import Message, User
from aiohttp import web

from .config import Settings
from .handler import MessageHandler
from .locks import ChatLocks, LocalChatLocks, RedisChatLocks
from .metrics import BotMetrics, HealthCheck, metrics_routes
from .policies import BotPolicies, breaker_store, build_policies
from .polling import GetUpdatesRaw, Poller
from .redact import redacting
from .server import serve
from .stages.admin import AdminCommands
from .stages.analysis import RuleAnalyzer
from .stages.analytics import Analytics, AnalyticsSink, MemorySink
from .stages.decision import DecisionEngine
from .stages.intake import TextIntake
from .stages.moderation import WordListModerator
from .stages.responder import AnswerCache, ChainResponder, ModelClient
from .stages.sending import MAX_MESSAGE, TelegramSender
from .stages.tools import ToolBackend, ToolRunner
from .stats import BotStats
from .stores import RedisStateStore, StateStore, open_store, redis_client
from .webhook import WebhookReceiver

__all__ = ["BotApp", "open_bot"]

log = logging.getLogger("examples.telegram_bot")

STOP_TIMEOUT = 5.0  # seconds a shielded clean-up may take when the bot stops

# aiogram builds Response[T] on every call; pydantic keeps a parametrized class
# only while something else holds it (its cache is a WeakValueDictionary), so
# after each garbage collection it was built again: 0.6 to 2.6 ms a call, a
# quarter of the bot's CPU under load (profiled). Holding them keeps them cached.
_RESPONSE_TYPES = (
    Response[Message],
    Response[bool],
    Response[User],
    Response[GetUpdatesRaw.__returning__],
)


@dataclass(slots=True)
class _Spawner:
    """Starts background work in the running bot's task group (dropped when not running)."""

    group: anyio.abc.TaskGroup | None = None

    def __call__(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self.group is not None:
            self.group.start_soon(fn)


@dataclass(slots=True)
class BotApp:
    """A built bot. ``await app.run()`` polls, or serves the webhook, until cancelled.

    ``ports`` holds the bound ports once listening (``"webhook"``,
    ``"metrics"``); ``ready`` is set then.
    """

    settings: Settings
    bot: Bot
    store: StateStore
    policies: BotPolicies
    stats: BotStats
    handler: MessageHandler
    poller: Poller
    tools: ToolBackend
    responder: ChainResponder
    metrics: BotMetrics
    health: HealthCheck
    locks: ChatLocks
    webhook: WebhookReceiver | None = None
    spawner: _Spawner = field(default_factory=_Spawner)
    ports: dict[str, int] = field(default_factory=dict)
    ready: anyio.Event = field(default_factory=anyio.Event)

    async def run(self) -> None:
        while True:  # the Bot API may be down at boot: wait for it rather than exit
            try:
                me = await self.policies.poll.call(self.bot.get_me)
                break
            except Exception as exc:
                pause = self.settings.timings.poll_backoff_max
                log.warning("getMe failed: %r; trying again in %gs", exc, pause)
                await anyio.sleep(pause)
        s = self.settings
        log.info("bot @%s (replica %s) in %s mode", me.username, s.replica_id, s.mode)
        async with anyio.create_task_group() as tg:
            self.spawner.group = tg
            try:
                for host, port, names, routes in self._servers():
                    grace = s.timings.stop_grace
                    bound = await tg.start(
                        functools.partial(serve, shutdown_timeout=grace), host, port, routes
                    )
                    for name in names:
                        self.ports[name] = bound
                    log.info("serving %s on %s:%d", " and ".join(names), host, bound)
                tg.start_soon(self._cleanup)
                if self.webhook is not None:
                    await self._register_webhook()
                    self.ready.set()
                    await anyio.sleep_forever()
                self.ready.set()
                await self.poller.run()
            finally:
                self.spawner.group = None

    def _servers(self) -> list[tuple[str, int, list[str], list[web.RouteDef]]]:
        """(host, port, what, routes) of each server to run; the webhook and the metrics
        share one when given the same port (port 0, any free port: each its own)."""
        s = self.settings
        servers: list[tuple[str, int, list[str], list[web.RouteDef]]] = []

        def add(name: str, host: str, port: int, routes: Sequence[web.RouteDef]) -> None:
            for _, bound, names, all_routes in servers:
                if port and bound == port:
                    names.append(name)
                    all_routes.extend(routes)
                    return
            servers.append((host, port, [name], list(routes)))

        if self.webhook is not None:
            add("webhook", s.webhook_host, s.webhook_port, self.webhook.routes())
        if s.metrics_port is not None:
            routes = metrics_routes(self.metrics, self.health)
            add("metrics", s.metrics_host, s.metrics_port, routes)
        return servers

    async def _register_webhook(self) -> None:
        s = self.settings
        if s.webhook_url is None:
            log.info("WEBHOOK_URL not set: the webhook is assumed registered already")
            return
        try:
            await self.policies.poll.call(
                self.bot.set_webhook,
                url=s.webhook_url,
                secret_token=s.webhook_secret,
                allowed_updates=["message"],
                max_connections=s.webhook_max_connections,
                drop_pending_updates=False,
            )
            log.info("webhook registered: %s", s.webhook_url)
        except Exception as exc:  # another replica may succeed; updates still arrive
            log.error("setWebhook failed: %r; serving anyway", exc)

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
    store_prefix: str | None = None,
) -> AsyncIterator[BotApp]:
    """Build the bot from ``settings``; everything it opened is closed on exit.

    ``store_prefix`` (default ``settings.state_store_prefix``) prefixes every
    Redis key: conversations, outbox, locks and breakers (replicas of one bot
    use the same prefix).
    """
    t = settings.timings
    if store_prefix is None:
        store_prefix = settings.state_store_prefix
    stats = BotStats() if stats is None else stats
    tools = ToolBackend() if tools is None else tools
    async with AsyncExitStack() as stack:
        stack.enter_context(redacting(settings.secrets()))
        metrics = BotMetrics(stats)
        client = None
        shared = None
        if settings.uses_redis:
            client = redis_client(settings.state_store_url, timeout=t.store_timeout)
            stack.push_async_callback(_close_redis, client)
            if settings.shared_breakers:
                shared = breaker_store(client, prefix=f"{store_prefix}breakers")
        policies = build_policies(t, observers=(stats, metrics.observer), breaker_store=shared)
        if shared is not None:  # its background task syncs the breakers with Redis
            await shared.start()
            stack.push_async_callback(_stop_breaker_store, shared)
        store: StateStore
        locks: ChatLocks
        if client is not None:
            store = RedisStateStore(
                client, prefix=store_prefix, ttl=t.state_ttl, policy=policies.store,
                outbox_ttl=t.dedupe_ttl,
            )  # fmt: skip
            locks = RedisChatLocks(
                client,
                prefix=store_prefix,
                ttl=t.chat_lock_ttl,
                wait=t.chat_lock_wait,
                owner=settings.replica_id,
            )
        else:
            store = await open_store(
                settings.state_store_url, policy=policies.store, outbox_ttl=t.dedupe_ttl
            )
            stack.push_async_callback(store.aclose)
            locks = LocalChatLocks(t.chat_lock_wait)
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
        bot = Bot(settings.bot_token, session=session)
        stack.push_async_callback(session.close)
        # max_retries=0: the openai client would otherwise retry twice on its own,
        # swallowing 429s that our policies (and the secondary model) must see.
        # Its aiohttp transport: httpx's pool polls every idle connection's socket
        # on each request, which cost more CPU under load than the rest of the
        # request (profiled: ~27 poll() calls a request at 100 messages/s).
        http = _aiohttp_transport()
        if http is not None:
            stack.push_async_callback(http.aclose)
        llm = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            max_retries=0,
            timeout=t.llm_client_timeout,
            http_client=http,
        )
        stack.push_async_callback(llm.close)

        spawner = _Spawner()
        responder = ChainResponder(
            ModelClient(llm, settings.primary_model, policies.primary),
            ModelClient(llm, settings.secondary_model, policies.secondary),
            AnswerCache(),
            history_turns=settings.history_turns,
            reserve=t.fallback_reserve,
            primary_budget=t.primary_budget,
            observers=(stats, metrics.observer),
            flags=settings.flags,
        )
        metrics.policies = (*policies.every(), responder.chain)
        health = HealthCheck(
            metrics,
            stats,
            store,
            breaker_store=shared,
            timeout=t.health_timeout,
            about={"replica": settings.replica_id, "mode": settings.mode,
                   "shared_breakers": policies.shared_breakers},
        )  # fmt: skip
        handler = MessageHandler(
            # Telegram's own limit; longer is refused by the limits, with a notice.
            intake=TextIntake(max_length=MAX_MESSAGE),
            analyzer=RuleAnalyzer(),
            engine=DecisionEngine(on_transition=stats.on_state),
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
            locks=locks,
            limits=settings.limits,
            admin=AdminCommands(
                settings.limits.admin_ids,
                stats,
                settings.flags,
                health_score=metrics.health_score,
                replica=settings.replica_id,
            ),
        )
        webhook = None
        if settings.mode == "webhook":
            webhook = WebhookReceiver(
                bot, handler, stats, secret=settings.webhook_secret, path=settings.webhook_path
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
            metrics=metrics,
            health=health,
            locks=locks,
            webhook=webhook,
            spawner=spawner,
        )


def _aiohttp_transport() -> Any:
    """openai's aiohttp-based HTTP client, or ``None`` (httpx) when this openai lacks it."""
    make = getattr(openai, "DefaultAioHttpClient", None)
    if make is None:
        return None
    try:
        return make()
    except RuntimeError:  # openai without its aiohttp extra
        return None


async def _stop_breaker_store(store: Any) -> None:
    """``store.aclose()``: shielded, so that its last round publishes this replica's
    pending transitions even when the bot is cancelled (SIGTERM), but for at most
    ``STOP_TIMEOUT``: a shutdown must never hang on a dependency."""
    with anyio.move_on_after(STOP_TIMEOUT, shield=True) as scope:
        await store.aclose()
    if scope.cancelled_caught:
        log.warning("the breaker store did not stop within %gs; left behind", STOP_TIMEOUT)


async def _close_redis(client: Any) -> None:
    with anyio.move_on_after(STOP_TIMEOUT, shield=True):
        await client.aclose()
