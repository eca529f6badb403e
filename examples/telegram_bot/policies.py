"""Every policy the bot uses, by name, in one place.

Each external call of the bot goes through one of these pipelines:

====================  ===============================================  ==========================
call                  pipeline (outermost first)                       why
====================  ===============================================  ==========================
LLM, per model        Retry ``llm-<role>-rate-limit`` (5 attempts,     429s are waited out (the
                      5..60 s x2, Retry-After honoured, gives up       server's hint wins) but only
                      after ``rate_limit_deadline``)                   briefly: then the secondary
                      → Retry ``llm-<role>-network`` (3 attempts,      network blips and 5xx
                      1..10 s x2, full jitter)
                      → CircuitBreaker ``llm-<role>`` (TimeWindow 60,  a failing or slow provider
                      min 10 calls, 50 % failed or 50 % slower than    is not called for 60 s
                      5 s, open 60 s)
                      → Bulkhead ``core`` (100, wait 5 s)              bounded concurrency
                      → Timeout ``llm-<role>-attempt`` (10 s)          per attempt
tool                  Bulkhead ``tools`` (20, wait 30 s)               a slow tool cannot starve
                      → Timeout ``tool`` (10 s)                        the LLM's pool
analytics             Bulkhead ``analytics`` (10, wait 1 s)            best effort, never delays
                      → Timeout ``analytics`` (1 s)                    a reply
sendMessage           Retry ``telegram-send`` (5 attempts, 1..10 s,    flood control's retry_after
                      retry_after up to 60 s waited out)               is honoured
                      → CircuitBreaker ``telegram-api``                stop hammering a sick API
                      → Timeout ``telegram-send-attempt`` (10 s)
getUpdates            Retry ``telegram-poll`` (5 attempts, 1..30 s)    the long poll's own timeout
                      → Timeout ``telegram-poll-attempt``              + 5 s (longer than the poll)
state store           Retry ``state-store`` (3 attempts, 50 ms..)      a locked SQLite file, a
                      → Timeout ``state-store-op`` (2 s)               Redis failover
====================  ===============================================  ==========================

The numbers are the production defaults of :class:`~.config.Timings`; the
demo and the tests shrink them through it. One :class:`BotPolicies` is built
per bot instance by the composition root (no module-level policy objects, so
two bots in one process never share a breaker, unless they share a store).

Replicas share their breakers through a breaker store: with a Redis state
store, :func:`breaker_store` builds ``resilient.stores.redis.RedisStore`` on
the same Redis client, and every breaker (``llm-primary``, ``llm-secondary``,
``telegram-api``) gets ``store=`` it, so an LLM outage seen by one replica
opens the breaker for all of them (``SHARED_BREAKERS=false``: each keeps its own).
"""

from __future__ import annotations

import email.utils
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai
import redis.exceptions
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramEntityTooLarge,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)

from resilient import (
    Backoff,
    Bulkhead,
    CircuitBreaker,
    CountWindow,
    Observer,
    Pipeline,
    Policy,
    Retry,
    Timeout,
    TimeoutExceeded,
    TimeWindow,
)

from .config import Timings

if TYPE_CHECKING:
    from resilient.stores.redis import RedisStore

__all__ = [
    "BotPolicies",
    "ModelPolicies",
    "breaker_store",
    "build_policies",
    "is_llm_failure",
    "is_rate_limited",
    "llm_retry_after",
    "telegram_retry_after",
]


# --- what counts as what ------------------------------------------------------


def is_rate_limited(exc: BaseException) -> bool:
    """A 429 from the LLM provider."""
    return isinstance(exc, openai.RateLimitError)


def is_llm_failure(exc: BaseException) -> bool:
    """The provider is unwell: no connection, a timeout, a 5xx. (A 4xx is our fault, and
    a 429 says the provider is up but busy: neither should open its breaker.)"""
    return isinstance(exc, openai.APIConnectionError | openai.InternalServerError | TimeoutExceeded)


def llm_retry_after(exc: BaseException) -> float | None:
    """The provider's hint on a 429: ``retry-after-ms``, or ``retry-after`` (seconds or a date)."""
    if not isinstance(exc, openai.RateLimitError):
        return None
    headers = exc.response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        # An HTTP date is wall-clock time by definition, so time.time() is right here.
        return None if parsed is None else max(parsed.timestamp() - time.time(), 0.0)


def telegram_retry_after(exc: BaseException) -> float | None:
    """Telegram's flood control hint (``TelegramRetryAfter.retry_after``, whole seconds)."""
    if isinstance(exc, TelegramRetryAfter):
        return float(exc.retry_after)
    return None


def is_telegram_transient(exc: BaseException) -> bool:
    """Worth sending again: flood control, a 5xx (also a non-JSON one), a network error.

    ``TelegramEntityTooLarge``, bad requests and the like are never retried (aiogram
    derives ``TelegramEntityTooLarge`` from ``TelegramNetworkError``: hence the check).
    """
    if isinstance(exc, TelegramEntityTooLarge):
        return False
    return isinstance(
        exc,
        TelegramRetryAfter
        | TelegramServerError
        | TelegramNetworkError
        | ClientDecodeError
        | TimeoutExceeded,
    )


def is_telegram_failure(exc: BaseException) -> bool:
    """The Bot API is unwell (flood control is not a failure: it is Telegram working)."""
    if isinstance(exc, TelegramEntityTooLarge):
        return False
    return isinstance(
        exc, TelegramServerError | TelegramNetworkError | ClientDecodeError | TimeoutExceeded
    )


STORE_TRANSIENT = (
    sqlite3.OperationalError,  # "database is locked"
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutExceeded,
)


# --- the policies ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelPolicies:
    """One model's pipeline and its breaker (kept apart for inspection)."""

    pipeline: Pipeline
    breaker: CircuitBreaker


@dataclass(frozen=True, slots=True)
class BotPolicies:
    """Every policy of one bot instance."""

    primary: ModelPolicies
    secondary: ModelPolicies
    core: Bulkhead
    tools: Pipeline
    analytics: Pipeline
    send: Pipeline
    telegram_breaker: CircuitBreaker
    chat_action: Timeout
    poll: Pipeline
    store: Pipeline
    shared_breakers: bool = False  # the breakers keep their state in a shared store

    def every(self) -> tuple[Policy, ...]:
        """Every policy of the bot, pipelines opened up (for ``/health``)."""
        seen: dict[int, Policy] = {}

        def walk(policy: Policy) -> Iterator[Policy]:
            yield policy
            for inner in getattr(policy, "policies", ()):
                yield from walk(inner)

        roots: list[Policy] = [
            self.primary.pipeline,
            self.secondary.pipeline,
            self.tools,
            self.analytics,
            self.send,
            self.chat_action,
            self.poll,
            self.store,
        ]
        for root in roots:
            for policy in walk(root):
                seen.setdefault(id(policy), policy)
        return tuple(seen.values())


# --- the breaker store (shared by replicas) -------------------------------------------


def breaker_store(client: Any, prefix: str) -> RedisStore:
    """The breakers' shared store on ``client`` (redis.asyncio) under ``prefix``.

    Defaults of :class:`~resilient.stores.redis.RedisStore`: a sync round every
    50 ms (an open breaker reaches the other replicas within about that), 0.5 s
    per round before Redis counts as unreachable (then each replica's breakers
    work on their own state until it answers again: the bot never waits for it).
    Run it with ``async with`` (the composition root does).
    """
    from resilient.stores.redis import RedisStore  # here: only bots on Redis need it

    return RedisStore(client, prefix=prefix)


def _model(
    role: str, core: Bulkhead, t: Timings, obs: Sequence[Observer], store: Any
) -> ModelPolicies:
    breaker = CircuitBreaker(
        f"llm-{role}",
        window=TimeWindow(t.breaker_window, bucket=t.breaker_bucket),
        minimum_calls=10,
        failure_rate_threshold=0.5,
        slow_call_duration=t.breaker_slow_call,
        slow_call_rate_threshold=0.5,
        open_duration=t.breaker_open,
        failure_on=is_llm_failure,
        ignore=(openai.RateLimitError,),
        store=store,
        observers=obs,
    )
    pipeline = Pipeline(
        Retry(
            f"llm-{role}-rate-limit",
            attempts=5,
            backoff=Backoff.exponential(
                t.rate_limit_backoff_initial, maximum=t.rate_limit_backoff_max, jitter="none"
            ),
            retry_on=is_rate_limited,
            retry_after=llm_retry_after,
            deadline=t.rate_limit_deadline,
            observers=obs,
        ),
        Retry(
            f"llm-{role}-network",
            attempts=3,
            backoff=Backoff.exponential(
                t.network_backoff_initial, maximum=t.network_backoff_max, jitter="full"
            ),
            retry_on=is_llm_failure,
            observers=obs,
        ),
        breaker,
        core,
        Timeout(t.llm_attempt_timeout, name=f"llm-{role}-attempt", observers=obs),
        name=f"llm-{role}",
    )
    return ModelPolicies(pipeline, breaker)


def build_policies(
    t: Timings, observers: Sequence[Observer] = (), *, breaker_store: Any = None
) -> BotPolicies:
    """Build one bot's policies from its timings; ``observers`` see every event;
    ``breaker_store`` (see :func:`breaker_store`) shares the breakers' state."""
    obs = tuple(observers)
    store = breaker_store
    core = Bulkhead("core", 100, max_wait=t.core_max_wait, observers=obs)
    telegram_breaker = CircuitBreaker(
        "telegram-api",
        window=CountWindow(20),
        minimum_calls=5,
        failure_rate_threshold=0.5,
        open_duration=t.send_backoff_max,
        failure_on=is_telegram_failure,
        ignore=(TelegramRetryAfter,),
        store=store,
        observers=obs,
    )
    return BotPolicies(
        primary=_model("primary", core, t, obs, store),
        secondary=_model("secondary", core, t, obs, store),
        core=core,
        tools=Pipeline(
            Bulkhead("tools", 20, max_wait=t.tools_max_wait, observers=obs),
            Timeout(t.tool_timeout, name="tool", observers=obs),
            name="tools",
        ),
        analytics=Pipeline(
            Bulkhead("analytics", 10, max_wait=t.analytics_max_wait, observers=obs),
            Timeout(t.analytics_timeout, name="analytics", observers=obs),
            name="analytics",
        ),
        send=Pipeline(
            Retry(
                "telegram-send",
                attempts=5,
                backoff=Backoff.exponential(
                    t.send_backoff_initial, maximum=t.send_backoff_max, jitter="full"
                ),
                retry_on=is_telegram_transient,
                retry_after=telegram_retry_after,
                max_retry_after=t.send_max_retry_after,
                observers=obs,
            ),
            telegram_breaker,
            Timeout(t.send_timeout, name="telegram-send-attempt", observers=obs),
            name="telegram-send",
        ),
        telegram_breaker=telegram_breaker,
        chat_action=Timeout(t.send_timeout, name="telegram-chat-action", observers=obs),
        poll=Pipeline(
            Retry(
                "telegram-poll",
                attempts=5,
                backoff=Backoff.exponential(
                    t.poll_backoff_initial, maximum=t.poll_backoff_max, jitter="full"
                ),
                retry_on=is_telegram_transient,
                retry_after=telegram_retry_after,
                observers=obs,
            ),
            # Longer than the long poll itself, or every quiet poll would time out.
            Timeout(t.poll_timeout + 5.0, name="telegram-poll-attempt", observers=obs),
            name="telegram-poll",
        ),
        store=Pipeline(
            Retry(
                "state-store",
                attempts=3,
                backoff=Backoff.exponential(
                    t.store_backoff, maximum=t.store_backoff * 10, jitter="full"
                ),
                retry_on=STORE_TRANSIENT,
                observers=obs,
            ),
            Timeout(t.store_timeout, name="state-store-op", observers=obs),
            name="state-store",
        ),
        shared_breakers=store is not None,
    )
