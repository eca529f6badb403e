"""A local OpenAI-compatible chat-completions server (aiohttp, asyncio).

``POST /v1/chat/completions`` answers deterministically (see
:func:`echo_answer`). Per model, faults are either scripted once each
(:meth:`LLMEmulator.script`, taken by one request at its start) or a standing
mode for every request (:meth:`LLMEmulator.set_mode`):

- :class:`RateLimited`: 429 with ``retry-after`` (whole seconds) and
  ``retry-after-ms`` headers, as OpenAI sends them;
- :class:`Outage`: a 5xx;
- :class:`Latency`: answer after ``seconds``.

Every request is kept in ``requests`` (model, messages, max_tokens,
temperature), so a test can check what the bot sent, history included.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web

__all__ = ["LLMEmulator", "LLMRequest", "Latency", "Outage", "RateLimited", "echo_answer"]


@dataclass(frozen=True, slots=True)
class RateLimited:
    """429 with a Retry-After of ``retry_after`` seconds."""

    retry_after: float = 1.0


@dataclass(frozen=True, slots=True)
class Outage:
    """A server error."""

    status: int = 500


@dataclass(frozen=True, slots=True)
class Latency:
    """Answer after ``seconds``."""

    seconds: float


LLMFault = RateLimited | Outage | Latency


@dataclass(frozen=True, slots=True)
class LLMRequest:
    model: str
    messages: tuple[dict[str, str], ...]
    max_tokens: int | None
    temperature: float | None
    at: float  # loop clock
    status: int = 200

    @property
    def last_user_text(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    @property
    def history(self) -> tuple[dict[str, str], ...]:
        """The earlier turns: everything but the system prompt and the current message."""
        return tuple(m for m in self.messages[:-1] if m["role"] != "system")


def echo_answer(model: str, messages: Sequence[dict[str, str]]) -> str:
    """A deterministic answer naming the model, the question and how much history came.

    "long answer" in the question gives a 9,000-character answer (to see splitting).
    """
    question = messages[-1]["content"] if messages else ""
    earlier = sum(1 for m in messages[:-1] if m["role"] != "system")
    if "long answer" in question.lower():
        return ("This is a deliberately long answer. " * 250).strip()
    return f"[{model}] You asked: {question[:200]} (I see {earlier} earlier messages.)"


@dataclass
class LLMEmulator:
    """The server. ``async with LLMEmulator() as llm:``; ``llm.url`` ends in ``/v1``."""

    answer: Callable[[str, Sequence[dict[str, str]]], str] = echo_answer
    host: str = "127.0.0.1"
    requests: list[LLMRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script: defaultdict[str, deque[LLMFault]] = defaultdict(deque)
        self._modes: dict[str, LLMFault] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> LLMEmulator:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            with anyio.CancelScope(shield=True):
                await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, model: str, *faults: LLMFault) -> None:
        """Queue faults for ``model``; each is taken by one request, at its start."""
        self._script[model].extend(faults)

    def set_mode(self, model: str, fault: LLMFault | None) -> None:
        """Apply ``fault`` to every request for ``model`` (``None``: healthy again)."""
        if fault is None:
            self._modes.pop(model, None)
        else:
            self._modes[model] = fault

    def clear(self) -> None:
        self._script.clear()
        self._modes.clear()

    def for_model(self, model: str) -> list[LLMRequest]:
        return [r for r in self.requests if r.model == model]

    async def _completions(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        model = str(body.get("model", ""))
        fault = self._script[model].popleft() if self._script[model] else self._modes.get(model)
        messages = tuple(
            {"role": str(m.get("role")), "content": str(m.get("content") or "")}
            for m in body.get("messages", [])
        )

        def record(status: int) -> None:
            self.requests.append(
                LLMRequest(
                    model,
                    messages,
                    body.get("max_tokens"),
                    body.get("temperature"),
                    anyio.current_time(),
                    status,
                )
            )

        if isinstance(fault, RateLimited):
            record(429)
            headers = {
                "retry-after": str(max(1, math.ceil(fault.retry_after))),
                "retry-after-ms": str(round(fault.retry_after * 1000)),
            }
            error = {
                "message": "Rate limit reached",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
            return web.json_response({"error": error}, status=429, headers=headers)
        if isinstance(fault, Outage):
            record(fault.status)
            error = {"message": "The server had an error", "type": "server_error"}
            return web.json_response({"error": error}, status=fault.status)
        if isinstance(fault, Latency):
            await anyio.sleep(fault.seconds)
        record(200)
        text = self.answer(model, messages)
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        )
