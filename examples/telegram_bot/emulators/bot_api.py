"""A local Telegram Bot API server for the demo and the tests (aiohttp, asyncio).

Speaks enough of the Bot API for aiogram: ``getMe``, ``getUpdates`` (with
``offset``, ``limit`` and the long-poll ``timeout``), ``sendMessage``,
``sendChatAction``, ``setWebhook``, ``deleteWebhook``, ``getWebhookInfo``,
``close``, ``logOut``. Users "write" with :meth:`BotAPIEmulator.user_says`;
what the bot sent is in ``sent``.

Webhooks: once ``setWebhook`` is called, ``getUpdates`` answers 409 Conflict
(as Telegram does) and each update is POSTed to the webhook's URL with the
``X-Telegram-Bot-Api-Secret-Token`` header; it is confirmed by a 2xx answer,
and sent again ``webhook_retry_after`` seconds after any other answer (or
none). One update per chat is in flight at a time, in order, and at most
``max_connections`` in all. :meth:`BotAPIEmulator.balance` puts a
round-robin load balancer in front: deliveries go to each of several URLs
(replicas) in turn instead of the registered one.

Faults are scripted per method with :meth:`BotAPIEmulator.inject` and each is
taken once, when a request starts (aiohttp keeps running a handler after the
client gave up, so a fault taken later could hit the retry instead):

- :class:`RetryAfter`: 429 with ``parameters.retry_after`` (flood control);
- :class:`ServerError`: a 5xx, JSON or (``json=False``) an HTML page that
  names the request path (and so the token, as some proxies' pages do);
- :class:`Delay`: answer normally, but only after ``seconds``.

Binds 127.0.0.1 on an ephemeral port; ``url`` is what ``TELEGRAM_API_URL`` takes.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import anyio.abc
from aiohttp import web

__all__ = [
    "SECRET_HEADER",
    "BotAPIEmulator",
    "Delay",
    "Delivery",
    "RetryAfter",
    "SentMessage",
    "ServerError",
    "UserMessage",
    "Webhook",
]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """429 Too Many Requests with ``retry_after`` whole seconds."""

    seconds: int = 1


@dataclass(frozen=True, slots=True)
class ServerError:
    """A 5xx; ``json=False`` answers an HTML page instead (aiogram: ``ClientDecodeError``)."""

    status: int = 502
    json: bool = True


@dataclass(frozen=True, slots=True)
class Delay:
    """Answer normally after ``seconds``."""

    seconds: float


Fault = RetryAfter | ServerError | Delay


@dataclass(frozen=True, slots=True)
class UserMessage:
    """A message a user sent (an update waiting for the bot)."""

    update_id: int
    message_id: int
    chat_id: int
    text: str
    at: float  # loop clock


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message the bot sent."""

    message_id: int
    chat_id: int
    text: str
    reply_to: int | None
    at: float  # loop clock


@dataclass(frozen=True, slots=True)
class Webhook:
    """What ``setWebhook`` registered."""

    url: str
    secret: str | None
    max_connections: int = 40


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook POST: the update, where it went, and the answer (0: none)."""

    update_id: int
    url: str
    status: int
    at: float  # loop clock


@dataclass(slots=True)
class _Log:
    method: str
    at: float
    status: int


@dataclass
class BotAPIEmulator:
    """The server. Use ``async with BotAPIEmulator() as api:``; ``api.url`` is its root."""

    token: str | None = None  # None: any token is accepted
    bot_username: str = "resilient_demo_bot"
    host: str = "127.0.0.1"
    sent: list[SentMessage] = field(default_factory=list)
    received: list[UserMessage] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    log: list[_Log] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    webhook_retry_after: float = 0.2  # seconds before a refused delivery is tried again
    webhook_timeout: float = 60.0  # seconds Telegram waits for the webhook's answer
    on_sent: Callable[[SentMessage], None] | None = None  # called for each message the bot sends

    def __post_init__(self) -> None:
        self._pending: list[dict[str, Any]] = []  # unconfirmed updates, in order
        self._updates: dict[int, dict[str, Any]] = {}  # every update ever, by id
        self._next_update = 1000
        self._next_message: defaultdict[int, int] = defaultdict(lambda: 1)
        self._faults: defaultdict[str, deque[Fault]] = defaultdict(deque)
        self._arrived = anyio.Event()
        self._activity = anyio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.webhook: Webhook | None = None
        self._targets: Iterator[str] | None = None  # balance(): round robin
        self._in_flight: set[int] = set()  # update ids being POSTed
        self._busy_chats: set[int] = set()
        self._not_before: dict[int, float] = {}  # update id -> loop time of its next try
        self._push_wake = anyio.Event()
        self._stack: AsyncExitStack | None = None
        self._replies: dict[tuple[int, int], list[SentMessage]] = {}  # (chat, reply_to) -> sent

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> BotAPIEmulator:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        async with AsyncExitStack() as stack:
            self._http = await stack.enter_async_context(aiohttp.ClientSession())
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)  # runs first on exit: stop delivering
            tg.start_soon(self._push_loop, tg)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:  # not shielded: the task group's scope must be current
            stack, self._stack = self._stack, None
            await stack.aclose()
        with anyio.CancelScope(shield=True):
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- scripting -------------------------------------------------------------

    def user_says(self, chat_id: int, text: str, *, user_id: int | None = None) -> UserMessage:
        """A user writes ``text`` in ``chat_id``: queue the update for the bot."""
        self._next_update += 1
        message_id = self._take_message_id(chat_id)
        now = anyio.current_time()
        uid = chat_id if user_id is None else user_id
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),  # Telegram dates are wall-clock Unix times
            "chat": {"id": chat_id, "type": "private", "first_name": f"User{uid}"},
            "from": {"id": uid, "is_bot": False, "first_name": f"User{uid}"},
            "text": text,
        }
        if text.startswith("/"):
            length = len(text.split()[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        update = {"update_id": self._next_update, "message": message}
        self._updates[self._next_update] = update
        self._pending.append(update)
        msg = UserMessage(self._next_update, message_id, chat_id, text, now)
        self.received.append(msg)
        self._wake_pollers()
        return msg

    def redeliver(self, msg: UserMessage) -> None:
        """Offer an update again, as Telegram does when its confirmation never came."""
        if all(u["update_id"] != msg.update_id for u in self._pending):
            self._pending.append(self._updates[msg.update_id])
            self._pending.sort(key=lambda u: int(u["update_id"]))
        self._wake_pollers()

    def _wake_pollers(self) -> None:
        self._arrived.set()
        self._arrived = anyio.Event()
        self._wake_pusher()

    def _wake_pusher(self) -> None:
        self._push_wake.set()
        self._push_wake = anyio.Event()

    def balance(self, urls: list[str]) -> None:
        """Deliver webhook updates to ``urls`` in turn (a load balancer in front of
        replicas), instead of the registered URL; the registered secret is still sent."""
        if not urls:
            raise ValueError(f"BotAPIEmulator.balance: urls must not be empty, got {urls!r}")
        self._targets = itertools.cycle(list(urls))
        self._wake_pusher()

    def update_body(self, msg: UserMessage) -> dict[str, Any]:
        """The update's JSON, as Telegram sends it (to post it to a webhook by hand)."""
        return self._updates[msg.update_id]

    def delivered(self, update_id: int) -> list[Delivery]:
        return [d for d in self.deliveries if d.update_id == update_id]

    def inject(self, method: str, *faults: Fault) -> None:
        """Queue ``faults`` for ``method``; each is taken by one request, at its start."""
        self._faults[method.lower()].extend(faults)

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults_left(self, method: str) -> int:
        return len(self._faults[method.lower()])

    def replies_to(self, message_id: int, chat_id: int) -> list[SentMessage]:
        """Messages sent as replies to a user's message."""
        return list(self._replies.get((chat_id, message_id), ()))

    def chat(self, chat_id: int) -> list[SentMessage]:
        return [m for m in self.sent if m.chat_id == chat_id]

    @property
    def unconfirmed(self) -> int:
        """Updates the bot has not confirmed with a higher offset yet."""
        return len(self._pending)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked after each request), else ``TimeoutError``."""
        with anyio.fail_after(timeout):
            while not predicate():
                await self._activity.wait()

    async def reply(self, msg: UserMessage, timeout: float = 10.0) -> SentMessage:
        """The first reply to ``msg``, waiting for it."""
        await self.wait_until(lambda: bool(self.replies_to(msg.message_id, msg.chat_id)), timeout)
        return self.replies_to(msg.message_id, msg.chat_id)[0]

    async def say(self, chat_id: int, text: str, timeout: float = 10.0) -> str:
        """``user_says`` and wait for the reply; return its text."""
        return (await self.reply(self.user_says(chat_id, text), timeout)).text

    # -- the server -----------------------------------------------------------------

    def _take_message_id(self, chat_id: int) -> int:
        value = self._next_message[chat_id]
        self._next_message[chat_id] = value + 1
        return value

    def _poke(self) -> None:
        self._activity.set()
        self._activity = anyio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].lower()
        self.requests[method] += 1
        self._poke()  # a waiter may count requests (a long poll answers only much later)
        fault = self._faults[method].popleft() if self._faults[method] else None
        try:
            if self.token is not None and request.match_info["token"] != self.token:
                return self._log(method, _error(401, "Unauthorized"))
            if isinstance(fault, RetryAfter):
                return self._log(
                    method,
                    _error(
                        429,
                        f"Too Many Requests: retry after {fault.seconds}",
                        {"retry_after": fault.seconds},
                    ),
                )
            if isinstance(fault, ServerError):
                if fault.json:
                    return self._log(method, _error(fault.status, "Internal Server Error"))
                # Like some proxies' error pages, it names the request path: that is
                # how a bot token (in every Bot API path) ends up in an error message.
                page = f"<html><body>Bad Gateway: {request.path}</body></html>"
                return self._log(
                    method, web.Response(status=fault.status, text=page, content_type="text/html")
                )
            if isinstance(fault, Delay):
                await anyio.sleep(fault.seconds)
            params = await _params(request)
            handler = getattr(self, f"_m_{method}", None)
            if handler is None:
                return self._log(method, _error(404, "Not Found: method not found"))
            try:
                result = await handler(params)
            except _APIError as exc:
                return self._log(method, _error(exc.code, exc.description))
            return self._log(method, web.json_response({"ok": True, "result": result}))
        finally:
            self._poke()

    def _log(self, method: str, response: web.Response) -> web.Response:
        self.log.append(_Log(method, anyio.current_time(), response.status))
        return response

    async def _m_getme(self, params: dict[str, Any]) -> Any:
        return {"id": 1, "is_bot": True, "first_name": "Demo", "username": self.bot_username}

    async def _m_deletewebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._pending.clear()
        return True

    async def _m_setwebhook(self, params: dict[str, Any]) -> Any:
        url = str(params.get("url") or "")
        if not url:  # Telegram: an empty URL removes the webhook
            self.webhook = None
            return True
        max_connections = int(params.get("max_connections") or 40)
        self.webhook = Webhook(url, params.get("secret_token") or None, max_connections)
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self._pending.clear()
        self._wake_pusher()
        return True

    async def _m_getwebhookinfo(self, params: dict[str, Any]) -> Any:
        hook = self.webhook
        return {
            "url": "" if hook is None else hook.url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
            "max_connections": 40 if hook is None else hook.max_connections,
        }

    async def _m_close(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_logout(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_sendchataction(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_getupdates(self, params: dict[str, Any]) -> Any:
        if self.webhook is not None:
            raise _APIError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if offset:
            # An offset confirms every update below it: Telegram forgets them.
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
            self._poke()
        with anyio.move_on_after(timeout):
            while not self._pending:
                await self._arrived.wait()
        return self._pending[:limit]

    async def _m_sendmessage(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        text = str(params.get("text", ""))
        if not text:
            raise _APIError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise _APIError(400, "Bad Request: message is too long")
        reply_to = None
        raw = params.get("reply_parameters")
        if raw:
            reply = json.loads(raw) if isinstance(raw, str) else raw
            reply_to = int(reply["message_id"])
        elif params.get("reply_to_message_id"):
            reply_to = int(params["reply_to_message_id"])
        message_id = self._take_message_id(chat_id)
        sent = SentMessage(message_id, chat_id, text, reply_to, anyio.current_time())
        self.sent.append(sent)
        if reply_to is not None:
            self._replies.setdefault((chat_id, reply_to), []).append(sent)
        if self.on_sent is not None:
            self.on_sent(sent)
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": 1, "is_bot": True, "first_name": "Demo"},
            "text": text,
        }

    # -- webhook delivery ---------------------------------------------------------

    async def _push_loop(self, tg: anyio.abc.TaskGroup) -> None:
        """Start a POST for each update that may go now; sleep until something changes."""
        while True:
            wake = self._push_wake
            hook = self.webhook
            next_try = float("inf")
            if hook is not None:
                now = anyio.current_time()
                blocked = set(self._busy_chats)  # a chat's updates go one at a time, in order
                for update in self._pending:
                    chat = int(update["message"]["chat"]["id"])
                    if chat in blocked:
                        continue
                    blocked.add(chat)
                    uid = int(update["update_id"])
                    not_before = self._not_before.get(uid, 0.0)
                    if not_before > now:
                        next_try = min(next_try, not_before)
                        continue
                    if len(self._in_flight) >= hook.max_connections:
                        break
                    url = hook.url if self._targets is None else next(self._targets)
                    self._in_flight.add(uid)
                    self._busy_chats.add(chat)
                    tg.start_soon(self._push, update, url, hook.secret)
            with anyio.move_on_after(max(0.0, next_try - anyio.current_time())):
                await wake.wait()

    async def _push(self, update: dict[str, Any], url: str, secret: str | None) -> None:
        uid = int(update["update_id"])
        chat = int(update["message"]["chat"]["id"])
        headers = {} if secret is None else {SECRET_HEADER: secret}
        status = 0
        try:
            timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
            async with self._http.post(url, json=update, headers=headers, timeout=timeout) as r:
                status = r.status
                await r.read()
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        finally:
            self.deliveries.append(Delivery(uid, url, status, anyio.current_time()))
            self._in_flight.discard(uid)
            self._busy_chats.discard(chat)
            if 200 <= status < 300:
                self._pending = [u for u in self._pending if u["update_id"] != uid]
                self._not_before.pop(uid, None)
            else:
                self._not_before[uid] = anyio.current_time() + self.webhook_retry_after
            self._poke()
            self._wake_pusher()


class _APIError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def _body(code: int, description: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    return web.json_response(_body(code, description, parameters), status=code)


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    if request.method == "GET":
        return dict(request.query)
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}
