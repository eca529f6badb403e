"""Moderation: the last look at a reply before it is sent."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

__all__ = ["Moderator", "WordListModerator"]

APOLOGY = "Sorry, I can't answer that right now. Please try again in a minute."


class Moderator(Protocol):
    def review(self, text: str) -> str:
        """The text to send instead of ``text`` (never empty)."""
        ...


class WordListModerator:
    """Masks blocked words, drops control characters, never lets an empty reply through."""

    def __init__(self, blocked: Iterable[str] = ("damn", "idiot", "stupid")) -> None:
        words = sorted({w.lower() for w in blocked if w})
        self._pattern = (
            re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
            if words
            else None
        )

    def review(self, text: str) -> str:
        text = "".join(ch for ch in text if ch in "\n\t" or ch >= " ").strip()
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: "*" * len(m.group(0)), text)
        return text or APOLOGY
