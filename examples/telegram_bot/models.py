"""The bot's domain types, shared by every stage. Plain data, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Analysis",
    "Answer",
    "Conversation",
    "DecisionState",
    "Incoming",
    "Intent",
    "Outbox",
    "Preferences",
    "Turn",
]


class Intent(enum.StrEnum):
    """What a message is about, as the analysis stage sees it."""

    GREETING = "greeting"
    HELP = "help"
    RESET = "reset"
    REMINDER = "reminder"
    NOTE = "note"
    LIST_NOTES = "list_notes"
    STYLE = "style"
    WEATHER = "weather"
    CURRENCY = "currency"
    CONFIRM = "confirm"
    DENY = "deny"
    CANCEL = "cancel"
    CHAT = "chat"


class DecisionState(enum.StrEnum):
    """Where a chat is in its conversation (see :mod:`.stages.decision`)."""

    IDLE = "idle"
    AWAITING_INPUT = "awaiting_input"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    TOOL_REQUIRED = "tool_required"


@dataclass(frozen=True, slots=True)
class Incoming:
    """A validated text message from Telegram."""

    update_id: int
    chat_id: int
    message_id: int
    user_id: int
    text: str


@dataclass(frozen=True, slots=True)
class Analysis:
    """Intent and entities of one message.

    ``numbers`` and ``entities`` (place names, currency codes) are what a cached
    answer must share with the question before it may be reused.
    """

    intent: Intent
    normalized: str
    numbers: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    slots: tuple[tuple[str, str], ...] = ()

    def slot(self, name: str) -> str | None:
        return dict(self.slots).get(name)


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the history: who said it and the text as sent."""

    role: Literal["user", "assistant"]
    text: str

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "text": self.text}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Turn:
        role = data["role"]
        if role not in ("user", "assistant"):
            raise ValueError(f"Turn: role must be 'user' or 'assistant', got {role!r}")
        return cls(role, str(data["text"]))


@dataclass(slots=True)
class Conversation:
    """One chat's persisted state: the decision state, the open flow, the history.

    ``version`` grows by one on every save; a store refuses nothing on it, but
    the tests use it to prove that no update of a chat was lost. ``recent``:
    when the chat's last accepted messages came (Unix time, for the per-chat
    rate limit; kept with the state so that every replica sees the same).
    """

    state: DecisionState = DecisionState.IDLE
    flow: str | None = None
    slots: dict[str, str] = field(default_factory=dict)
    awaiting: str | None = None
    history: list[Turn] = field(default_factory=list)
    version: int = 0
    recent: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "flow": self.flow,
            "slots": dict(self.slots),
            "awaiting": self.awaiting,
            "history": [t.to_json() for t in self.history],
            "version": self.version,
            "recent": list(self.recent),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        return cls(
            state=DecisionState(data["state"]),
            flow=data.get("flow"),
            slots={str(k): str(v) for k, v in data.get("slots", {}).items()},
            awaiting=data.get("awaiting"),
            history=[Turn.from_json(t) for t in data.get("history", [])],
            version=int(data.get("version", 0)),
            recent=[float(t) for t in data.get("recent", [])],
        )


@dataclass(slots=True)
class Preferences:
    """Per-user preferences. ``style``: ``"normal"`` or ``"short"`` answers."""

    style: Literal["normal", "short"] = "normal"

    def to_json(self) -> dict[str, Any]:
        return {"style": self.style}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preferences:
        style = data.get("style", "normal")
        return cls(style="short" if style == "short" else "normal")


@dataclass(frozen=True, slots=True)
class Outbox:
    """The reply decided for an update, saved with the chat's new state.

    ``sent`` turns true once Telegram accepted every part. An update with an
    unsent outbox entry is answered from here after a restart, never decided
    again, so a tool or a state transition never runs twice for one message.
    ``parts_sent``: how many parts of a reply split above 4096 characters
    Telegram accepted so far, recorded before the next part goes out, so that
    sending it again starts after them instead of repeating them.
    """

    update_id: int
    chat_id: int
    reply_to: int
    text: str
    sent: bool = False
    parts_sent: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "update_id": self.update_id,
            "chat_id": self.chat_id,
            "reply_to": self.reply_to,
            "text": self.text,
            "sent": self.sent,
            "parts_sent": self.parts_sent,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outbox:
        return cls(
            update_id=int(data["update_id"]),
            chat_id=int(data["chat_id"]),
            reply_to=int(data["reply_to"]),
            text=str(data["text"]),
            sent=bool(data["sent"]),
            # Absent from entries written before parts were counted: none recorded.
            parts_sent=int(data.get("parts_sent", 0)),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """A generated reply and the fallback level that produced it."""

    text: str
    level: str
