"""Sending: replies to Telegram, split at 4096 characters, through the send policy.

``sendMessage`` has no idempotency key: when an attempt times out, Telegram
may or may not have delivered it, and a retry may deliver it twice. The bot
takes that risk only where it must (see ``docs/bot.md``): it retries flood
control (429: certainly not delivered), 5xx and network errors, and a timed
out attempt, preferring a rare duplicate to a lost answer; the send timeout is
set well above Telegram's usual latency so that the ambiguous case is rare.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiogram import Bot
from aiogram.enums import ChatAction
from aiogram.types import ReplyParameters

from resilient import Policy

__all__ = ["MAX_MESSAGE", "PartSent", "Sender", "TelegramSender", "split_message"]

log = logging.getLogger("examples.telegram_bot.sending")

MAX_MESSAGE = 4096  # Telegram's limit for one message's text, in characters


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Parts of at most ``limit`` characters, cut at a newline or space when one is
    in the second half of the part, else hard. Joined back they give ``text``."""
    if limit < 2:
        raise ValueError(f"split_message: limit must be >= 2, got {limit!r}")
    parts: list[str] = []
    while len(text) > limit:
        cut = max(text.rfind("\n", 0, limit), text.rfind(" ", 0, limit))
        cut = cut + 1 if cut >= limit // 2 else limit
        parts.append(text[:cut])
        text = text[cut:]
    parts.append(text)
    return parts


PartSent = Callable[[int], Awaitable[None]]


class Sender(Protocol):
    async def send(
        self,
        chat_id: int,
        text: str,
        reply_to: int,
        *,
        skip: int = 0,
        on_part: PartSent | None = None,
    ) -> int:
        """Send ``text`` as the reply to message ``reply_to``, but for its first ``skip``
        parts (delivered before); after each part but the last, await ``on_part`` with
        the number of parts delivered so far. Return the parts this call sent."""
        ...

    async def typing(self, chat_id: int) -> None:
        """Show "typing…" (best effort: never raises)."""
        ...


class TelegramSender:
    """Sends through aiogram with ``send_policy`` around each part.

    Only the first part replies to the user's message; the rest follow it.
    ``request_timeout`` (whole seconds) is aiogram's own, kept above the
    policy's timeout so that ours decides.
    """

    def __init__(
        self, bot: Bot, send_policy: Policy, action_policy: Policy, request_timeout: float
    ) -> None:
        self._bot = bot
        self._send = send_policy
        self._action = action_policy
        self._request_timeout = max(1, math.ceil(request_timeout) + 1)

    async def send(
        self,
        chat_id: int,
        text: str,
        reply_to: int,
        *,
        skip: int = 0,
        on_part: PartSent | None = None,
    ) -> int:
        parts = split_message(text)
        # The index is the part's place in the whole reply: a resend that skips the
        # first part must not make the second one the reply to the user's message.
        for i, part in enumerate(parts[skip:], start=skip):
            await self._send.call(self._send_part, chat_id, part, reply_to if i == 0 else None)
            if on_part is not None and i + 1 < len(parts):
                await on_part(i + 1)  # the last part is recorded by marking the reply sent
        return len(parts[skip:])

    async def _send_part(self, chat_id: int, text: str, reply_to: int | None) -> None:
        await self._bot.send_message(
            chat_id=chat_id,
            text=text,
            reply_parameters=(
                None
                if reply_to is None
                else ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
            ),
            request_timeout=self._request_timeout,
        )

    async def typing(self, chat_id: int) -> None:
        try:
            await self._action.call(self._typing, chat_id)
        except Exception as exc:  # a missing "typing…" is not worth a retry
            log.debug("sendChatAction failed: %r", exc)

    async def _typing(self, chat_id: int) -> None:
        await self._bot.send_chat_action(
            chat_id=chat_id, action=ChatAction.TYPING, request_timeout=self._request_timeout
        )
