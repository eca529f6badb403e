"""Admin commands, for the user ids in ``ADMIN_IDS`` only.

- ``/stats``: this replica's counters, fallback levels and health score;
- ``/flags``: which feature flags are on for this chat.

Anyone else gets a polite refusal (counted as the notice ``refused``); the
command never reaches the LLM.
"""

from __future__ import annotations

from collections.abc import Callable

from ..flags import FLAGS, Flags
from ..models import Incoming
from ..stats import BotStats

__all__ = ["ADMIN_COMMANDS", "REFUSED_TEXT", "AdminCommands"]

ADMIN_COMMANDS = ("/stats", "/flags")
REFUSED_TEXT = "Sorry, {command} is only for this bot's admins."


class AdminCommands:
    """Answers ``/stats`` and ``/flags`` for ``admins`` (user ids)."""

    def __init__(
        self,
        admins: frozenset[int],
        stats: BotStats,
        flags: Flags,
        *,
        health_score: Callable[[], float] = lambda: 1.0,
        replica: str = "",
    ) -> None:
        self.admins = admins
        self._stats = stats
        self._flags = flags
        self._health_score = health_score
        self._replica = replica

    @staticmethod
    def command(text: str) -> str | None:
        """The admin command ``text`` starts with (``/stats@my_bot`` too), or ``None``."""
        if not text.startswith("/"):
            return None
        word = text.split(maxsplit=1)[0].split("@", 1)[0].lower()
        return word if word in ADMIN_COMMANDS else None

    def answer(self, command: str, msg: Incoming) -> tuple[str, str]:
        """(reply, level): ``admin``, or ``refused`` for anyone not in ``admins``."""
        if msg.user_id not in self.admins:
            self._stats.notices["refused"] += 1
            return REFUSED_TEXT.format(command=command), "refused"
        if command == "/flags":
            lines = [
                f"{'on ' if self._flags.is_on(name, msg.chat_id) else 'off'} {name}: {what}"
                for name, what in FLAGS.items()
            ]
            return f"Flags for chat {msg.chat_id}:\n" + "\n".join(lines), "admin"
        s = self._stats
        levels = ", ".join(f"{k} {v}" for k, v in sorted(s.levels.items())) or "none"
        notices = ", ".join(f"{k} {v}" for k, v in sorted(s.notices.items())) or "none"
        return (
            f"Replica {self._replica or '?'}: {s.messages_in} messages in, "
            f"{s.replies_out} replies out, {s.duplicates_skipped} duplicates skipped.\n"
            f"Answered by: {levels}.\nNotices: {notices}.\n"
            f"Health score: {self._health_score():.2f}"
        ), "admin"
