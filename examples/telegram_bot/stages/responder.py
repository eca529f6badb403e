"""Response generation: the LLM fallback chain, which always ends in an answer.

Levels, in order (the first that answers wins; each is visible in the logs
and counted in ``BotStats.levels``):

1. ``primary``: the primary model, through its pipeline (see :mod:`..policies`),
   for at most its share of the answer budget (``primary_budget``).
2. ``secondary``: the secondary model, whenever the primary could not answer
   while time was left (:func:`failed_with_time_left`): it gave up on a 429,
   failed with a 5xx, no connection or an attempt's timeout, its breaker is
   open, the ``core`` bulkhead had no room, it answered with no text, or it
   was cut off at the end of its share (:class:`ShareExhausted`). Not when
   the message's answer budget ran out (:class:`BudgetExhausted`): then no
   model can answer in time, and the local levels do.
3. ``simplified``: the primary again with a small request (the same history,
   few tokens, low temperature), which a struggling provider may still serve
   (reached when the secondary could not answer either).
4. ``cached``: an earlier answer to a similar question: same intent, same
   numbers, same entities, and text similarity >= 0.8 (rapidfuzz). Labelled
   as cached in the reply.
5. ``template``: a canned answer for the detected intent, if it has one.
6. ``apology``: a static apology. Cannot fail.

Model levels stop ``fallback_reserve`` seconds before the message's answer
deadline, so the local levels always get to answer in time: each model call
runs under the time left, the secondary's and the simplified request's too
(their retries and backoffs included), and a call still running at that
point is cut off and raises :class:`BudgetExhausted`. The primary level also
stops after ``primary_budget`` seconds (production: 11 of the 21 the models
have), and raises :class:`ShareExhausted` if that cut it off: a primary that
hangs would otherwise spend the whole budget on its attempts' timeouts, and
the secondary, healthy or not, would never be asked. The rest (about 10 s,
one attempt) is the secondary's, and the simplified request's after it.

Feature flags (:mod:`..flags`) switch levels per chat: ``secondary_llm``,
``fallback_simplified``, ``fallback_cached``, ``fallback_template``. A level
switched off for the chat raises :class:`LevelOff`, and the chain moves on
(the apology cannot be switched off).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import openai
from rapidfuzz import fuzz

from resilient import FallbackChain, Observer, Strategy, call_context

from ..flags import Flags
from ..models import Analysis, Answer, Conversation, Intent, Preferences
from ..policies import ModelPolicies
from .moderation import APOLOGY

__all__ = [
    "AnswerCache",
    "BudgetExhausted",
    "ChainResponder",
    "LevelOff",
    "ModelClient",
    "Request",
    "Responder",
    "ShareExhausted",
    "TEMPLATES",
    "failed_with_time_left",
]

log = logging.getLogger("examples.telegram_bot.responder")

SYSTEM_PROMPT = (
    "You are a helpful assistant in a Telegram chat. Use the conversation so far. "
    "Answer in plain text."
)
SHORT_STYLE = " Answer in one or two sentences."
CACHED_LABEL = "(cached answer to a similar earlier question) "

TEMPLATES: dict[Intent, str] = {
    Intent.GREETING: "Hello! I'm here. My assistant brain is busy right now, but ask me anything.",
    Intent.WEATHER: (
        "I can't reach the weather service right now{where}. Please try again in a few minutes."
    ),
    Intent.CURRENCY: (
        "I can't get exchange rates right now{what}. Please try again in a few minutes."
    ),
}


class BudgetExhausted(Exception):
    """The message's answer budget is spent (before a model call, or during one, which
    is then cut off): no model can answer in time, the local fallbacks answer."""


class ShareExhausted(Exception):
    """The primary level's share of the answer budget is spent and its call was cut
    off; unlike :class:`BudgetExhausted`, the message still has time for the secondary."""


class LevelOff(Exception):
    """A feature flag switched this fallback level off for the chat."""


class EmptyAnswer(Exception):
    """The model answered with no text."""


def failed_with_time_left(exc: Exception) -> bool:
    """The model failed for a reason of its own, not because the answer budget ran out.

    The secondary model's ``can_handle``: whatever stopped the primary (a 429 given
    up on, a 5xx, no connection, ``resilient.TimeoutExceeded`` from an attempt's
    timeout, ``CircuitOpenError``, ``BulkheadFullError``, an empty answer, its
    share of the budget spent (:class:`ShareExhausted`), ...) leaves time for
    another model, except :class:`BudgetExhausted`, which
    :meth:`ChainResponder._model` raises when no time is left, before the call
    or during it.
    """
    return not isinstance(exc, BudgetExhausted)


@dataclass(frozen=True, slots=True)
class Request:
    """Everything one answer needs; passed unchanged to every level of the chain."""

    text: str
    analysis: Analysis
    history: tuple[dict[str, str], ...]  # the earlier turns, oldest first, as chat messages
    preferences: Preferences
    deadline: float  # loop clock: model calls must end by then
    chat_id: int = 0


class ModelClient:
    """One model behind its pipeline. The ``openai`` client must have ``max_retries=0``."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, policies: ModelPolicies) -> None:
        self._client = client
        self.model = model
        self.policies = policies

    async def complete(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float
    ) -> str:
        return await self.policies.pipeline.call(self._attempt, messages, max_tokens, temperature)

    async def _attempt(
        self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float
    ) -> str:
        # The client's own post() rather than chat.completions.create(): create()
        # first walks the body against the SDK's TypedDicts, which cost more CPU
        # than the rest of the bot's work on a message (profiled under load, with
        # 12 turns of history). The body is plain JSON already, and the answer is
        # read as plain JSON too (cast_to=object: no ChatCompletion built for one
        # string). Errors and timeouts are the SDK's, as with create().
        body = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        data = await self._client.post("/chat/completions", body=body, cast_to=object)
        content = _first_content(data)
        if not content or not content.strip():
            raise EmptyAnswer(f"{self.model} answered with no text")
        return content.strip()


def _first_content(data: object) -> str | None:
    """``choices[0].message.content`` of a chat completion's JSON, or ``None``."""
    try:
        content = data["choices"][0]["message"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


@dataclass(frozen=True, slots=True)
class _Cached:
    intent: Intent
    numbers: frozenset[str]
    entities: frozenset[str]
    question: str
    answer: str


class AnswerCache:
    """Recent model answers, reused only for a question that means the same thing.

    Similarity alone is wrong in practice ("weather in paris" is 80 % like
    "weather in berlin", "20 usd" like "10 usd"), so a candidate must have the
    same intent, the same numbers and the same entities before its text
    similarity (rapidfuzz ``token_sort_ratio``, 0..1) is compared with
    ``threshold`` (default 0.8). Holds the last ``size`` answers (default 500).
    """

    def __init__(self, size: int = 500, threshold: float = 0.8) -> None:
        if size < 1:
            raise ValueError(f"AnswerCache: size must be >= 1, got {size!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"AnswerCache: threshold must be in (0, 1], got {threshold!r}")
        self._items: deque[_Cached] = deque(maxlen=size)
        self.threshold = threshold

    def remember(self, analysis: Analysis, answer: str) -> None:
        self._items.append(
            _Cached(
                analysis.intent,
                frozenset(analysis.numbers),
                frozenset(analysis.entities),
                analysis.normalized,
                answer,
            )
        )

    def find(self, analysis: Analysis) -> str | None:
        numbers, entities = frozenset(analysis.numbers), frozenset(analysis.entities)
        best, best_score = None, 0.0
        for item in reversed(self._items):  # newest first: prefer fresher answers
            if item.intent is not analysis.intent or item.numbers != numbers:
                continue
            if item.entities != entities:
                continue
            score = fuzz.token_sort_ratio(item.question, analysis.normalized) / 100.0
            if score >= self.threshold and score > best_score:
                best, best_score = item.answer, score
        return best


class Responder(Protocol):
    async def answer(
        self,
        text: str,
        analysis: Analysis,
        conversation: Conversation,
        preferences: Preferences,
        deadline: float,
        *,
        chat_id: int = 0,
    ) -> Answer: ...


class ChainResponder:
    """The fallback chain of the module docstring.

    ``history_turns``: earlier messages sent with each request (default 10);
    ``reserve``: seconds before ``deadline`` when model calls stop;
    ``primary_budget``: seconds the primary level may take at most (default
    ``None``: all the time left), the rest being left for the secondary;
    ``flags``: the feature flags (default: every level on for every chat).
    """

    def __init__(
        self,
        primary: ModelClient,
        secondary: ModelClient,
        cache: AnswerCache,
        *,
        history_turns: int = 10,
        reserve: float = 1.0,
        primary_budget: float | None = None,
        max_tokens: int = 600,
        observers: Sequence[Observer] = (),
        flags: Flags | None = None,
    ) -> None:
        self.primary = primary
        self.secondary = secondary
        self.cache = cache
        self.history_turns = history_turns
        self.reserve = reserve
        self.primary_budget = primary_budget
        self.max_tokens = max_tokens
        self.flags = Flags() if flags is None else flags
        self.chain = FallbackChain(
            Strategy("secondary", self._secondary, can_handle=failed_with_time_left),
            Strategy("simplified", self._simplified),
            Strategy("cached", self._cached),
            Strategy("template", self._template),
            Strategy("apology", self._apology),
            name="llm-answer",
            observers=observers,
        )

    async def answer(
        self,
        text: str,
        analysis: Analysis,
        conversation: Conversation,
        preferences: Preferences,
        deadline: float,
        *,
        chat_id: int = 0,
    ) -> Answer:
        history = tuple(
            {"role": t.role, "content": t.text} for t in conversation.history[-self.history_turns :]
        )
        request = Request(text, analysis, history, preferences, deadline, chat_id)
        with call_context() as ctx:
            reply = await self.chain.call(self._primary, request)
        level = ctx.fallback or "primary"
        if level != "primary":
            log.info("answered by fallback level %s", level)
        return Answer(reply, level)

    # -- the levels --------------------------------------------------------------

    def _messages(self, request: Request) -> list[dict[str, str]]:
        system = SYSTEM_PROMPT + (SHORT_STYLE if request.preferences.style == "short" else "")
        return [
            {"role": "system", "content": system},
            *request.history,
            {"role": "user", "content": request.text},
        ]

    async def _model(
        self,
        client: ModelClient,
        request: Request,
        *,
        max_tokens: int,
        temperature: float,
        share: float | None = None,
    ) -> str:
        left = request.deadline - anyio.current_time() - self.reserve
        if left <= 0:
            raise BudgetExhausted(f"no time left for {client.model}")
        # A level with a share of the budget (the primary) stops at the end of it, if
        # that comes first: a cut there is the level's failure, with time left.
        limit = left if share is None else min(share, left)
        # The whole call (retries, backoffs, breaker, bulkhead wait) runs under the time
        # left. Its expiry is BudgetExhausted, not anyio's plain TimeoutError, so that it
        # cannot be mistaken for an attempt's resilient.TimeoutExceeded (a TimeoutError
        # too), after which the secondary model still has time to answer.
        with anyio.move_on_after(limit) as budget:
            answer = await client.complete(
                self._messages(request), max_tokens=max_tokens, temperature=temperature
            )
        if budget.cancelled_caught:
            if limit < left:
                raise ShareExhausted(f"{client.model} was cut off after its {limit:g} s share")
            raise BudgetExhausted(f"{client.model} was cut off: the answer budget ran out")
        self.cache.remember(request.analysis, answer)
        return answer

    async def _primary(self, request: Request) -> str:
        tokens = self.max_tokens // 3 if request.preferences.style == "short" else self.max_tokens
        return await self._model(
            self.primary, request, max_tokens=tokens, temperature=0.7, share=self.primary_budget
        )

    def _check(self, flag: str, request: Request) -> None:
        # Read only when the chain reaches the level: the primary path pays nothing.
        if not self.flags.is_on(flag, request.chat_id):
            raise LevelOff(f"{flag} is off for chat {request.chat_id}")

    async def _secondary(self, request: Request) -> str:
        self._check("secondary_llm", request)
        return await self._model(
            self.secondary, request, max_tokens=self.max_tokens, temperature=0.7
        )

    async def _simplified(self, request: Request) -> str:
        # The same history (the contract wants it in every request); few tokens, low temperature.
        self._check("fallback_simplified", request)
        return await self._model(self.primary, request, max_tokens=120, temperature=0.2)

    def _cached(self, request: Request) -> str:
        self._check("fallback_cached", request)
        found = self.cache.find(request.analysis)
        if found is None:
            raise LookupError("no cached answer to a similar question")
        return CACHED_LABEL + found

    def _template(self, request: Request) -> str:
        self._check("fallback_template", request)
        template = TEMPLATES.get(request.analysis.intent)
        if template is None:
            raise LookupError(f"no template for intent {request.analysis.intent.value}")
        entities = ", ".join(e.title() if len(e) > 3 else e for e in request.analysis.entities)
        fill: dict[str, Any] = {"where": f" for {entities}" if entities else "", "what": ""}
        if request.analysis.intent is Intent.CURRENCY and entities:
            fill["what"] = f" for {entities}"
        return template.format(**fill)

    def _apology(self, request: Request) -> str:
        return APOLOGY
