"""Analysis: the intent and entities of a message, cached by the message's hash.

Rule-based on purpose: the example is about resilience, and the rules are
deterministic, fast and testable. ``numbers`` and ``entities`` are what the
answer cache compares before reusing an answer (see :mod:`.responder`).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Protocol

from ..models import Analysis, Intent

__all__ = ["Analyzer", "RuleAnalyzer", "WHEN_PATTERN"]

WHEN_PATTERN = re.compile(
    r"\b(in \d+ (?:minutes?|mins?|hours?|days?)|at \d{1,2}(?::\d{2})?(?: ?[ap]m)?"
    r"|tomorrow(?: at \d{1,2}(?::\d{2})?)?|tonight|this evening)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_CURRENCIES = {
    "usd": "USD", "dollar": "USD", "dollars": "USD", "eur": "EUR", "euro": "EUR",
    "euros": "EUR", "gbp": "GBP", "pound": "GBP", "pounds": "GBP", "jpy": "JPY",
    "yen": "JPY", "chf": "CHF", "franc": "CHF", "francs": "CHF",
}  # fmt: skip
_CITIES = {
    "paris", "berlin", "london", "rome", "madrid", "tokyo", "moscow", "vienna",
    "prague", "lisbon", "oslo", "warsaw", "amsterdam", "new york",
}  # fmt: skip
_NOT_PLACES = {"the", "a", "my", "our", "today", "tomorrow", "tonight", "general"}
_GREETINGS = ("hi", "hello", "hey", "good morning", "good evening", "good afternoon")
_YES = {"yes", "y", "yeah", "yep", "sure", "ok", "okay", "confirm", "do it"}
_NO = {"no", "n", "nope", "nah", "don't", "dont"}
_CANCEL = {"cancel", "stop", "never mind", "nevermind", "abort"}


class Analyzer(Protocol):
    def analyze(self, text: str) -> Analysis: ...


def normalize(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation."""
    return re.sub(r"\s+", " ", text.lower()).strip(" .!?,;:")


class RuleAnalyzer:
    """Keyword rules; results kept in an LRU cache keyed by the SHA-256 of the text.

    ``cache_size`` analyses are kept (default 1024); ``hits`` counts reuses.
    """

    def __init__(self, cache_size: int = 1024) -> None:
        if cache_size < 0:
            raise ValueError(f"RuleAnalyzer: cache_size must be >= 0, got {cache_size!r}")
        self._cache: OrderedDict[str, Analysis] = OrderedDict()
        self._size = cache_size
        self.hits = 0

    def analyze(self, text: str) -> Analysis:
        key = hashlib.sha256(text.encode()).hexdigest()
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return found
        result = self._analyze(text)
        if self._size:
            self._cache[key] = result
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return result

    def _analyze(self, text: str) -> Analysis:
        norm = normalize(text)
        numbers = tuple(n.replace(",", ".") for n in _NUMBER.findall(norm))
        entities = _entities(norm)

        def make(intent: Intent, **slots: str) -> Analysis:
            return Analysis(intent, norm, numbers, entities, tuple(sorted(slots.items())))

        if norm.startswith("/"):
            command, _, rest = norm.partition(" ")
            command = command.split("@", 1)[0]
            if command in ("/start", "/help"):
                return make(Intent.HELP)
            if command == "/reset":
                return make(Intent.RESET)
            if command == "/notes":
                return make(Intent.LIST_NOTES)
            if command == "/style":
                return make(Intent.STYLE, style=rest.strip())
            if command == "/remind":
                return make(Intent.REMINDER, **_reminder_slots(rest))
            if command == "/note":
                return make(Intent.NOTE, **({"text": text.split(None, 1)[1]} if rest else {}))
            return make(Intent.HELP)
        if norm in _YES:
            return make(Intent.CONFIRM)
        if norm in _NO:
            return make(Intent.DENY)
        if norm in _CANCEL:
            return make(Intent.CANCEL)
        if norm.startswith("remind me") or norm.startswith("set a reminder") or norm == "reminder":
            rest = norm.removeprefix("remind me").removeprefix("set a reminder")
            return make(Intent.REMINDER, **_reminder_slots(rest))
        if norm in ("my notes", "list notes", "show notes", "show my notes", "notes"):
            return make(Intent.LIST_NOTES)
        note = re.match(
            r"^(?:take a note|note|make a note)\b[:\s]*(.*)$", text.strip(), re.I | re.S
        )
        if note:
            body = note.group(1).strip()
            return make(Intent.NOTE, **({"text": body} if body else {}))
        if any(w in norm for w in ("weather", "forecast", "temperature", "raining")):
            return make(Intent.WEATHER)
        if any(e in _CURRENCIES.values() for e in entities) and (
            "convert" in norm or "exchange" in norm or "rate" in norm or " in " in f" {norm} "
        ):
            return make(Intent.CURRENCY)
        if any(norm == g or norm.startswith(g + " ") for g in _GREETINGS):
            return make(Intent.GREETING)
        return make(Intent.CHAT)


def _reminder_slots(rest: str) -> dict[str, str]:
    """A reminder's ``what`` and ``when``, as far as the text has them."""
    rest = rest.strip()
    slots: dict[str, str] = {}
    when = WHEN_PATTERN.search(rest)
    if when:
        slots["when"] = when.group(1).lower()
        rest = (rest[: when.start()] + rest[when.end() :]).strip()
    rest = re.sub(r"^(?:to|about|that)\s+", "", rest).strip(" .!?,")
    if rest:
        slots["what"] = rest
    return slots


def _entities(norm: str) -> tuple[str, ...]:
    found: set[str] = set()
    for word in re.findall(r"[a-z]+", norm):
        if word in _CURRENCIES:
            found.add(_CURRENCIES[word])
    for city in _CITIES:
        if re.search(rf"\b{re.escape(city)}\b", norm):
            found.add(city)
    # An unknown place after "in"/"for" in a weather question is an entity too
    # (one word: "weather in oslo tomorrow" is about "oslo").
    place = re.search(r"\b(?:weather|forecast|temperature)\b.*?\b(?:in|for|at) ([a-z]+)", norm)
    if place and not any(c in found for c in _CITIES) and place.group(1) not in _NOT_PLACES:
        found.add(place.group(1))
    return tuple(sorted(found))
