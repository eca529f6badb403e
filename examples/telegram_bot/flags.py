"""Feature flags: on or off, rolled out to a share of chats, with allow and deny lists.

A flag is decided per chat, in this order:

1. the chat is on the ``deny`` list: off;
2. the flag is not ``enabled``: off for every chat (the kill switch);
3. the chat is on the ``allow`` list: on (testers, before a rollout reaches them);
4. otherwise on for ``percentage`` % of chats (0 to 100, fractions allowed),
   chosen by a stable hash of the flag's name and the chat id.

The hash is SHA-256 of ``"<flag>:<chat id>"``, read as a number in
[0, 100): a chat is in the rollout when its number is below ``percentage``.
It is stable across restarts, replicas and Python versions (``hash()`` is
not: it is salted per process), so raising a flag from 10 % to 20 % keeps the
first 10 % and adds another 10 %. Each flag hashes its own name too, so
two flags at 10 % do not land on the same chats.

(The original design checked the percentage before its allow and deny lists,
and the lists only at 100 %: a denied user inside the percentage got the
feature. Here the deny list always wins, and the allow list works during a
partial rollout.)

The flags the bot reads (:data:`FLAGS`), each on for every chat by default:

- ``secondary_llm``: the secondary model answers when the primary cannot answer;
- ``fallback_simplified``, ``fallback_cached``, ``fallback_template``: those
  fallback levels (the static apology cannot be switched off: it is the
  level that always answers).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["FLAGS", "Flag", "Flags", "rollout_bucket"]

FLAGS: Mapping[str, str] = MappingProxyType(
    {
        "secondary_llm": "the secondary model answers when the primary cannot answer",
        "fallback_simplified": "the simplified request to the primary",
        "fallback_cached": "cached answers to similar questions",
        "fallback_template": "canned answers by intent",
    }
)
"""Every flag the bot reads, with what it switches."""


def rollout_bucket(name: str, chat_id: int) -> float:
    """The chat's place in ``name``'s rollout: a stable number in [0, 100)."""
    digest = hashlib.sha256(f"{name}:{chat_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / 2.0**64


@dataclass(frozen=True, slots=True)
class Flag:
    """One flag (see the module docstring for the order of the checks).

    ``enabled`` (default true), ``percentage`` of chats (0 to 100, default 100),
    ``allow`` and ``deny``: chat ids (default empty).
    """

    enabled: bool = True
    percentage: float = 100.0
    allow: frozenset[int] = field(default_factory=frozenset)
    deny: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"Flag: enabled must be true or false, got {self.enabled!r}")
        p = self.percentage
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p):
            raise ValueError(f"Flag: percentage must be a number from 0 to 100, got {p!r}")
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"Flag: percentage must be a number from 0 to 100, got {p!r}")

    def is_on(self, name: str, chat_id: int) -> bool:
        if chat_id in self.deny or not self.enabled:
            return False
        if chat_id in self.allow or self.percentage >= 100.0:
            return True
        return rollout_bucket(name, chat_id) < self.percentage


_ALL_ON = Flag()


@dataclass(frozen=True, slots=True)
class Flags:
    """The bot's flags by name; a flag not configured is on for every chat."""

    flags: Mapping[str, Flag] = field(default_factory=dict)

    def is_on(self, name: str, chat_id: int) -> bool:
        """Whether flag ``name`` is on for ``chat_id``."""
        return self.flags.get(name, _ALL_ON).is_on(name, chat_id)

    def for_chat(self, chat_id: int) -> frozenset[str]:
        """The names of the flags that are on for ``chat_id``."""
        return frozenset(name for name in FLAGS if self.is_on(name, chat_id))

    @classmethod
    def parse(cls, data: Mapping[str, Any], source: str = "flags") -> Flags:
        """Flags from configuration: ``{name: {"enabled", "percentage", "allow", "deny"}}``.

        A flag may also be given as ``true``/``false`` (on or off for all) or a
        percentage number. Unknown flag names and keys are errors, so a typo
        does not silently leave a flag at its default. ``source`` names where
        the data came from, in the error.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: must be a table of flags, got {data!r}")
        parsed: dict[str, Flag] = {}
        for name, raw in data.items():
            where = f"{source}.{name}"
            if name not in FLAGS:
                known = ", ".join(FLAGS)
                raise ValueError(f"{where}: unknown flag {name!r} (known: {known})")
            try:
                parsed[name] = _flag(raw, where)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}".replace("Flag: ", "")) from None
        return cls(MappingProxyType(parsed))


def _flag(raw: Any, where: str) -> Flag:
    if isinstance(raw, bool):
        return Flag(enabled=raw)
    if isinstance(raw, int | float):
        return Flag(percentage=float(raw))
    if not isinstance(raw, Mapping):
        raise ValueError(f"must be true, false, a percentage or a table, got {raw!r}")
    unknown = set(raw) - {"enabled", "percentage", "allow", "deny"}
    if unknown:
        raise ValueError(
            f"unknown keys {sorted(unknown)} (known: enabled, percentage, allow, deny)"
        )
    percentage = raw.get("percentage", 100.0)
    if isinstance(percentage, int) and not isinstance(percentage, bool):
        percentage = float(percentage)
    return Flag(
        enabled=raw.get("enabled", True),
        percentage=percentage,
        allow=_ids(raw.get("allow", ()), "allow"),
        deny=_ids(raw.get("deny", ()), "deny"),
    )


def _ids(raw: Any, key: str) -> frozenset[int]:
    if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
        raise ValueError(f"{key} must be a list of chat ids, got {raw!r}")
    items = list(raw)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise ValueError(f"{key} must be a list of chat ids (integers), got {items!r}")
    return frozenset(items)
