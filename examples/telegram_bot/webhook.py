"""Webhook mode: Telegram POSTs each update to the bot (aiohttp), instead of the bot polling.

Telegram allows one long-poller per bot (a second ``getUpdates`` gets 409
Conflict), so several replicas run in webhook mode behind one address:

- every request must carry ``X-Telegram-Bot-Api-Secret-Token`` equal to
  ``WEBHOOK_SECRET`` (compared in constant time); a wrong or missing one gets
  401 and nothing is read or processed;
- the update is handled inside the request, under its chat's lock (in Redis
  across replicas), and the answer says whether it is finished: 200 when it
  was answered (or was a duplicate, or is ignored), 503 when not (its reply
  could not be sent, or its chat stayed locked by another replica), so
  Telegram delivers it again later. A redelivery of an answered update
  finds its outbox entry and is not answered twice.

Handling inside the request keeps the at-least-once delivery with Telegram:
an update is acknowledged only once its reply is out. Telegram waits for the
answer (the reply deadline is 30 s); ``WEBHOOK_MAX_CONNECTIONS`` (default
40) bounds how many it sends at once.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

import anyio
from aiogram import Bot
from aiogram.types import Update
from aiohttp import web

from .handler import MessageHandler
from .stats import BotStats

__all__ = ["SECRET_HEADER", "WebhookReceiver"]

log = logging.getLogger("examples.telegram_bot.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookReceiver:
    """The webhook's route: checks the secret, parses the update, hands it to the handler."""

    def __init__(
        self, bot: Bot, handler: MessageHandler, stats: BotStats, *, secret: str, path: str
    ) -> None:
        if not secret:
            raise ValueError("WebhookReceiver: secret must be set, got ''")
        self._bot = bot
        self._handler = handler
        self._stats = stats
        self._secret = secret.encode()
        self.path = path

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post(self.path, self._post)]

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get(SECRET_HEADER)
        return given is not None and hmac.compare_digest(given.encode(), self._secret)

    async def _post(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            self._stats.webhook_refused += 1
            why = "no" if SECRET_HEADER not in request.headers else "a wrong"
            log.warning("webhook: refused a request from %s with %s secret", request.remote, why)
            return web.json_response({"ok": False, "description": "Unauthorized"}, status=401)
        received_at = anyio.current_time()
        try:
            update = Update.model_validate(await request.json(), context={"bot": self._bot})
        except Exception as exc:
            log.warning("webhook: not an update: %s", type(exc).__name__)
            return web.json_response({"ok": False, "description": "Bad Request"}, status=400)
        try:
            finished = await self._handler.handle(update, received_at)
        except Exception:
            log.exception(
                "update %d: handling failed; Telegram will send it again", update.update_id
            )
            finished = False
        if finished:
            return web.json_response({"ok": True})
        return web.json_response({"ok": False, "description": "try again later"}, status=503)
