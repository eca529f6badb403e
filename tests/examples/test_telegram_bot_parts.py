"""The bot's parts on their own: decision state machine, analysis, answer cache, splitting,
configuration, error classification (the secondary model's rule included), moderation
and intake."""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import openai
import pytest
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendMessage
from aiogram.types import Update
from examples.telegram_bot.config import Settings, Timings
from examples.telegram_bot.models import (
    Analysis,
    Conversation,
    DecisionState,
    Intent,
    Preferences,
    Turn,
)
from examples.telegram_bot.policies import (
    is_llm_failure,
    is_rate_limited,
    is_telegram_transient,
    llm_retry_after,
    telegram_retry_after,
)
from examples.telegram_bot.stages.analysis import WHEN_PATTERN, RuleAnalyzer
from examples.telegram_bot.stages.decision import (
    TRANSITIONS,
    Action,
    DecisionEngine,
    Event,
    IllegalTransition,
)
from examples.telegram_bot.stages.intake import TextIntake
from examples.telegram_bot.stages.moderation import APOLOGY, WordListModerator
from examples.telegram_bot.stages.responder import (
    AnswerCache,
    BudgetExhausted,
    ChainResponder,
    EmptyAnswer,
    ShareExhausted,
    failed_with_time_left,
)
from examples.telegram_bot.stages.sending import split_message
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient import BulkheadFullError, CircuitOpenError, TimeoutExceeded

# --- the decision state machine, against a model -------------------------------------

INPUTS = [
    "remind me",
    "remind me to call mom",
    "remind me to call mom in 5 minutes",
    "buy milk",
    "in 10 minutes",
    "at 18:30",
    "whenever",
    "yes",
    "no",
    "cancel",
    "note",
    "note: eggs",
    "my notes",
    "hello",
    "what is a fern?",
    "/help",
    "/reset",
    "/style short",
]


@dataclass
class FlowModel:
    """The reminder and note flows in plain terms, to check the engine against."""

    mode: str = "idle"  # idle | what | when | text | confirm
    slots: dict[str, str] = field(default_factory=dict)
    flow: str | None = None

    def step(self, text: str, intent: Intent, prefill: dict[str, str]) -> tuple[Action, str]:
        """The expected action and tool, updating the model."""
        if intent is Intent.RESET:
            self.mode, self.slots, self.flow = "idle", {}, None
            return Action.RESET, ""
        if intent in (Intent.HELP, Intent.STYLE):
            return Action.REPLY, ""
        if self.mode in ("what", "when", "text"):
            if intent is Intent.CANCEL:
                self.mode, self.slots, self.flow = "idle", {}, None
                return Action.REPLY, ""
            if self.mode == "when":
                found = WHEN_PATTERN.search(text)
                if found is None:
                    return Action.REPLY, ""
                self.slots["when"] = found.group(1).lower()
            else:
                self.slots[self.mode] = text
            return self._next()
        if self.mode == "confirm":
            if intent is Intent.CONFIRM:
                self.mode = "idle"
                return Action.RUN_TOOL, "reminder"
            if intent in (Intent.DENY, Intent.CANCEL):
                self.mode, self.slots, self.flow = "idle", {}, None
            return Action.REPLY, ""
        if intent is Intent.REMINDER:
            self.flow, self.slots = "reminder", dict(prefill)
            return self._next()
        if intent is Intent.NOTE:
            self.flow, self.slots = "note", dict(prefill)
            return self._next()
        if intent is Intent.LIST_NOTES:
            self.flow = "list_notes"
            return Action.RUN_TOOL, "list_notes"
        return Action.ANSWER, ""

    def _next(self) -> tuple[Action, str]:
        order = {"reminder": ("what", "when"), "note": ("text",)}[self.flow or ""]
        missing = [s for s in order if s not in self.slots]
        if missing:
            self.mode = missing[0]
            return Action.REPLY, ""
        if self.flow == "reminder":
            self.mode = "confirm"
            return Action.REPLY, ""
        self.mode = "idle"
        return Action.RUN_TOOL, "note"


class DecisionMachine(RuleBasedStateMachine):
    """Random conversations: the engine follows the model and never leaves its table."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = DecisionEngine()
        self.analyzer = RuleAnalyzer()
        self.conv = Conversation()
        self.model = FlowModel()

    @rule(text=st.sampled_from(INPUTS))
    def message(self, text: str) -> None:
        analysis = self.analyzer.analyze(text)
        before = self.conv.state
        expected_action, expected_tool = self.model.step(
            text, analysis.intent, dict(analysis.slots)
        )
        decision = self.engine.decide(self.conv, analysis, text)
        assert decision.action is expected_action
        if decision.event is not None:
            assert TRANSITIONS[(before, decision.event)] is self.conv.state
        if decision.action is Action.RESET:
            self.engine.reset(self.conv, "test", clear_history=True)
        if decision.action is Action.RUN_TOOL:
            assert decision.tool == expected_tool
            if expected_tool == "reminder":
                assert set(decision.args) == {"what", "when"}
            assert self.conv.state is DecisionState.TOOL_REQUIRED
            self.engine.after_tool(self.conv)

    @invariant()
    def same_state_as_the_model(self) -> None:
        expected = {
            "idle": DecisionState.IDLE,
            "what": DecisionState.AWAITING_INPUT,
            "when": DecisionState.AWAITING_INPUT,
            "text": DecisionState.AWAITING_INPUT,
            "confirm": DecisionState.AWAITING_CONFIRMATION,
        }[self.model.mode]
        assert self.conv.state is expected
        if self.model.mode != "idle":
            assert self.conv.slots == self.model.slots


TestDecisionMachine = DecisionMachine.TestCase
TestDecisionMachine.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)


def test_illegal_transition_raises() -> None:
    """An event the current state has no row for raises instead of moving the chat."""
    conv = Conversation(state=DecisionState.TOOL_REQUIRED)
    analysis = RuleAnalyzer().analyze("what is a fern?")
    with pytest.raises(IllegalTransition, match="tool_required on chat"):
        DecisionEngine().decide(conv, analysis, "what is a fern?")


def test_every_transition_is_reachable_in_the_table() -> None:
    """The table has a way out of every state and into every state."""
    sources = {s for s, _ in TRANSITIONS}
    targets = set(TRANSITIONS.values())
    assert sources == targets == set(DecisionState)
    assert TRANSITIONS[(DecisionState.TOOL_REQUIRED, Event.TOOL_DONE)] is DecisionState.IDLE


def test_reset_logs_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    """A reset says why, and keeps the history unless asked to clear it."""
    conv = Conversation(state=DecisionState.AWAITING_INPUT, flow="reminder", awaiting="what")
    turn = Turn("user", "x")
    conv.history.append(turn)
    caplog.set_level("INFO", logger="examples.telegram_bot.decision")
    DecisionEngine().reset(conv, "error recovery after TimeoutError", clear_history=False)
    assert conv.state is DecisionState.IDLE
    assert conv.history == [turn]
    assert "error recovery after TimeoutError" in caplog.text


# --- analysis ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent", "slots"),
    [
        ("/start", Intent.HELP, {}),
        ("/reset", Intent.RESET, {}),
        (
            "Remind me to call mom in 10 minutes",
            Intent.REMINDER,
            {"what": "call mom", "when": "in 10 minutes"},
        ),
        ("remind me", Intent.REMINDER, {}),
        ("note: Buy Eggs", Intent.NOTE, {"text": "Buy Eggs"}),
        ("my notes", Intent.LIST_NOTES, {}),
        ("Yes!", Intent.CONFIRM, {}),
        ("what's the weather in Paris?", Intent.WEATHER, {}),
        ("convert 20 usd to eur", Intent.CURRENCY, {}),
        ("hello there", Intent.GREETING, {}),
        ("what is a fern?", Intent.CHAT, {}),
    ],
)
def test_analysis_finds_intent_and_slots(text: str, intent: Intent, slots: dict[str, str]) -> None:
    """Rule-based intents and the reminder's prefilled slots."""
    analysis = RuleAnalyzer().analyze(text)
    assert analysis.intent is intent
    assert dict(analysis.slots) == slots


def test_analysis_is_cached_by_message_hash() -> None:
    """The same text is analysed once; the second time comes from the cache."""
    analyzer = RuleAnalyzer()
    first = analyzer.analyze("weather in Berlin tomorrow")
    assert analyzer.analyze("weather in Berlin tomorrow") is first
    assert analyzer.hits == 1
    assert first.entities == ("berlin",)


# --- the answer cache ---------------------------------------------------------------------


def _cache_with(question: str, answer: str) -> tuple[AnswerCache, RuleAnalyzer]:
    analyzer, cache = RuleAnalyzer(), AnswerCache()
    cache.remember(analyzer.analyze(question), answer)
    return cache, analyzer


@pytest.mark.parametrize(
    ("asked", "hit"),
    [
        ("what's the weather in Paris?", True),
        ("What is the weather in Paris", True),
        ("what's the weather in Berlin?", False),  # same words, another city
        ("convert 20 usd to eur", False),  # another intent
    ],
)
def test_cached_answer_needs_same_intent_and_entities(asked: str, hit: bool) -> None:
    """Similar text is not enough: intent and entities must match too."""
    cache, analyzer = _cache_with("what's the weather in Paris?", "sunny")
    assert (cache.find(analyzer.analyze(asked)) == "sunny") is hit


def test_cached_answer_needs_the_same_numbers() -> None:
    """'20 usd' never gets the answer about '10 usd'."""
    cache, analyzer = _cache_with("convert 10 usd to eur", "9.2 EUR")
    assert cache.find(analyzer.analyze("convert 20 usd to eur")) is None
    assert cache.find(analyzer.analyze("Convert 10 USD to EUR!")) == "9.2 EUR"


def test_answer_cache_rejects_bad_configuration() -> None:
    """Bad sizes and thresholds raise ValueError naming the value."""
    with pytest.raises(ValueError, match="threshold must be in"):
        AnswerCache(threshold=1.5)
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        AnswerCache(size=0)


# --- splitting ------------------------------------------------------------------------------


@given(text=st.text(alphabet=st.sampled_from("ab \n"), max_size=400), limit=st.integers(2, 50))
def test_split_message_keeps_the_text_and_the_limit(text: str, limit: int) -> None:
    """Parts are never above the limit, never empty (but for an empty text), and join
    back to the text."""
    parts = split_message(text, limit)
    assert "".join(parts) == text
    assert all(len(p) <= limit for p in parts)
    assert all(parts) or parts == [""]


def test_split_message_prefers_whitespace() -> None:
    """A cut falls after a space or newline in the second half of a part."""
    assert split_message("aaaa bbbb cccc", 10) == ["aaaa bbbb ", "cccc"]
    assert split_message("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


# --- configuration ----------------------------------------------------------------------------


def test_settings_from_environment() -> None:
    """The contract's variables, with their defaults."""
    s = Settings.from_env({"BOT_TOKEN": "1:a", "METRICS_PORT": "9100"})
    assert s.telegram_api_url == "https://api.telegram.org"
    assert s.state_store_url == "sqlite:///telegram_bot.db"
    assert s.metrics_port == 9100
    s = Settings.from_env(
        {
            "BOT_TOKEN": "1:a",
            "TELEGRAM_API_URL": "http://127.0.0.1:8081",
            "LLM_BASE_URL": "http://127.0.0.1:8000/v1",
            "LLM_PRIMARY_MODEL": "big",
            "LLM_SECONDARY_MODEL": "small",
            "STATE_STORE_URL": "redis://127.0.0.1:6379/2",
        }
    )
    assert (s.primary_model, s.secondary_model, s.metrics_port) == ("big", "small", None)
    assert s.llm_base_url == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "bot_token must be set"),
        ({"BOT_TOKEN": "1:a", "METRICS_PORT": "x"}, "METRICS_PORT must be a port number, got 'x'"),
        ({"BOT_TOKEN": "1:a", "STATE_STORE_URL": "mysql://db"}, "got 'mysql://db'"),
    ],
)
def test_bad_settings_raise_naming_the_value(env: dict[str, str], message: str) -> None:
    """Bad configuration raises ValueError naming the argument and the value."""
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_timings_scale_every_duration_but_telegram_hints() -> None:
    """Scaling shrinks durations; the poll timeout stays whole seconds, >= 1."""
    t = Timings().scaled(0.1)
    assert t.reply_deadline == pytest.approx(3.0)
    assert t.breaker_window == pytest.approx(6.0)
    assert t.poll_timeout == 2.0
    assert t.send_max_retry_after == 60.0
    assert Timings().scaled(0.001).poll_timeout == 1.0
    with pytest.raises(ValueError, match="factor must be a finite number > 0, got 0"):
        Timings().scaled(0)


# --- error classification ------------------------------------------------------------------


def _rate_limit(headers: dict[str, str]) -> openai.RateLimitError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(429, headers=headers, request=request)
    return openai.RateLimitError("rate limited", response=response, body=None)


def test_llm_retry_after_reads_the_headers() -> None:
    """retry-after-ms first, then retry-after as seconds or as an HTTP date."""
    assert llm_retry_after(_rate_limit({"retry-after-ms": "1500", "retry-after": "2"})) == 1.5
    assert llm_retry_after(_rate_limit({"retry-after": "7"})) == 7.0
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    hint = llm_retry_after(_rate_limit({"retry-after": email.utils.format_datetime(later)}))
    assert hint is not None
    assert 25 < hint <= 30
    assert llm_retry_after(_rate_limit({})) is None
    assert llm_retry_after(ValueError()) is None


def test_llm_errors_are_classified() -> None:
    """429s are rate limits, not failures; timeouts and connection errors are failures."""
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    assert is_rate_limited(_rate_limit({}))
    assert not is_llm_failure(_rate_limit({}))
    assert is_llm_failure(openai.APIConnectionError(request=request))
    assert is_llm_failure(TimeoutExceeded(1.0))
    bad = openai.BadRequestError("bad", response=httpx2.Response(400, request=request), body=None)
    assert not is_llm_failure(bad)


def test_the_secondary_model_takes_any_failure_but_a_spent_budget() -> None:
    """Whatever stopped the primary leaves the secondary its turn, an attempt's own
    timeout (TimeoutExceeded, a TimeoutError) included; only a spent answer budget
    does not."""
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    server_error = openai.InternalServerError(
        "boom", response=httpx2.Response(500, request=request), body=None
    )
    bad = openai.BadRequestError("bad", response=httpx2.Response(400, request=request), body=None)
    for exc in (
        _rate_limit({}),
        server_error,
        bad,
        openai.APIConnectionError(request=request),
        openai.APITimeoutError(request=request),
        TimeoutExceeded(1.0, "llm-primary-attempt"),
        CircuitOpenError("llm-primary", 30.0),
        BulkheadFullError("core", "max_wait"),
        EmptyAnswer("primary answered with no text"),
        ShareExhausted("the primary was cut off after its share"),
    ):
        assert failed_with_time_left(exc), exc
    assert not failed_with_time_left(BudgetExhausted("no time left"))


class _FakeModel:
    """Stands in for a ModelClient: ``behaviour`` runs for each request."""

    def __init__(self, model: str, behaviour: Any) -> None:
        self.model = model
        self.behaviour = behaviour
        self.calls = 0

    async def complete(
        self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float
    ) -> str:
        self.calls += 1
        result: str = await self.behaviour()
        return result


async def _hang() -> str:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def _attempt_timed_out() -> str:
    raise TimeoutExceeded(0.5, "llm-primary-attempt")


async def _answer() -> str:
    return "from the secondary"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("primary", "budget", "share", "level", "secondary_calls"),
    [
        (_attempt_timed_out, 5.0, None, "secondary", 1),  # an attempt's timeout: time is left
        (_hang, 0.2, None, "apology", 0),  # cut off by the budget: no time for the secondary
        (_hang, 0.2, 0.5, "apology", 0),  # a share beyond the time left: the budget cuts
        (_hang, 1.0, 0.2, "secondary", 1),  # cut off by its share: time is left
    ],
    ids=["attempt-timeout", "budget-spent", "share-beyond-budget", "share-spent"],
)
async def test_chain_asks_the_secondary_only_with_time_left(
    primary: Any, budget: float, share: float | None, level: str, secondary_calls: int
) -> None:
    """A primary whose attempt timed out, or that was cut off at the end of its share
    of the budget (``primary_budget``), is followed by the secondary; a primary cut
    off by the answer budget is not (and the reply comes as the budget ends)."""
    first, second = _FakeModel("big", primary), _FakeModel("small", _answer)
    chain = ChainResponder(
        first,  # type: ignore[arg-type]
        second,  # type: ignore[arg-type]
        AnswerCache(),
        reserve=0.1,
        primary_budget=share,
    )
    analysis = Analysis(Intent.CHAT, "tell me a story")
    start = anyio.current_time()
    with anyio.fail_after(budget + 1.0):
        answer = await chain.answer(
            "tell me a story", analysis, Conversation(), Preferences(), start + budget
        )
    assert answer.level == level
    assert second.calls == secondary_calls
    assert first.calls == 1  # and no simplified request once the budget is spent
    assert anyio.current_time() - start < budget
    if share is not None and share < budget:  # the secondary asked at the end of the share
        assert anyio.current_time() - start >= share


def test_telegram_errors_are_classified() -> None:
    """Flood control, 5xx, non-JSON answers and network errors are retried; too-large
    and bad requests never are; flood control's retry_after is the hint."""
    method = SendMessage(chat_id=1, text="x")
    flood = TelegramRetryAfter(method=method, message="Too Many Requests", retry_after=3)
    assert is_telegram_transient(flood)
    assert telegram_retry_after(flood) == 3.0
    assert is_telegram_transient(TelegramServerError(method=method, message="Bad Gateway"))
    assert is_telegram_transient(TelegramNetworkError(method=method, message="timeout"))
    assert is_telegram_transient(ClientDecodeError("Failed to decode", ValueError(), "<html>"))
    assert not is_telegram_transient(TelegramEntityTooLarge(method=method, message="too large"))
    assert not is_telegram_transient(TelegramBadRequest(method=method, message="bad"))
    assert telegram_retry_after(ValueError()) is None


# --- moderation and intake ------------------------------------------------------------------


def test_moderation_masks_and_never_sends_nothing() -> None:
    """Blocked words are masked, control characters dropped, an empty reply replaced."""
    moderator = WordListModerator(["darn"])
    assert moderator.review("Darn it\x07, again") == "**** it, again"
    assert moderator.review(" \x00 ") == APOLOGY


def _update(payload: dict[str, object]) -> Update:
    return Update.model_validate({"update_id": 1, "message": payload})


def test_intake_accepts_user_text_only() -> None:
    """Text from a user is accepted (control characters dropped, trimmed); a bot's
    message or a message without text is ignored."""
    base = {"message_id": 5, "date": 0, "chat": {"id": 9, "type": "private"}}
    user = {"id": 3, "is_bot": False, "first_name": "U"}
    intake = TextIntake(max_length=10)
    msg = intake.parse(_update(base | {"from": user, "text": " hi\x01 there, a long one "}))
    assert msg is not None
    assert (msg.chat_id, msg.message_id, msg.user_id, msg.text) == (9, 5, 3, "hi there, ")
    assert intake.parse(_update(base | {"from": user})) is None
    robot = {"id": 4, "is_bot": True, "first_name": "B"}
    assert intake.parse(_update(base | {"from": robot, "text": "hi"})) is None
