"""Intake: turn a Telegram update into a validated :class:`~..models.Incoming`, or nothing."""

from __future__ import annotations

import unicodedata
from typing import Protocol

from aiogram.types import Update

from ..models import Incoming

__all__ = ["Intake", "TextIntake"]


class Intake(Protocol):
    def parse(self, update: Update) -> Incoming | None:
        """The message to answer, or ``None`` for an update the bot ignores."""
        ...


class TextIntake:
    """Accepts private and group text messages from users, trimmed to ``max_length``.

    Control characters are dropped (newlines and tabs kept), so nothing odd
    reaches the analysis, the history or the LLM prompt.
    """

    def __init__(self, max_length: int = 4000) -> None:
        if max_length < 1:
            raise ValueError(f"TextIntake: max_length must be >= 1, got {max_length!r}")
        self.max_length = max_length

    def parse(self, update: Update) -> Incoming | None:
        msg = update.message
        if msg is None or msg.text is None or msg.from_user is None or msg.from_user.is_bot:
            return None
        text = "".join(
            ch for ch in msg.text if ch in "\n\t" or unicodedata.category(ch) != "Cc"
        ).strip()
        if not text:
            return None
        return Incoming(
            update_id=update.update_id,
            chat_id=msg.chat.id,
            message_id=msg.message_id,
            user_id=msg.from_user.id,
            text=text[: self.max_length],
        )
