"""Configuration: settings from the environment, and every duration the bot uses.

Environment variables (the contract in DESIGN.md, "The example bot's outside"):

- ``BOT_TOKEN``: the bot's token (required for ``run``).
- ``TELEGRAM_API_URL``: the Bot API server's root, without ``/bot…``
  (default ``https://api.telegram.org``).
- ``LLM_BASE_URL``: an OpenAI-compatible server including ``/v1``
  (default ``https://api.openai.com/v1``); ``LLM_API_KEY``;
  ``LLM_PRIMARY_MODEL`` (default ``gpt-4o``), ``LLM_SECONDARY_MODEL``
  (default ``gpt-4o-mini``).
- ``STATE_STORE_URL``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``
  (default ``sqlite:///telegram_bot.db``) or ``redis://…``.
- ``METRICS_PORT``: serve ``/metrics`` and ``/health`` on this port; unset: not served.

All durations live in :class:`Timings`, in seconds, with the production
values as defaults; the demo and the tests shrink them with
:meth:`Timings.scaled` instead of patching anything.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Settings", "Timings"]

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"
DEFAULT_STORE_URL = "sqlite:///telegram_bot.db"


@dataclass(frozen=True, slots=True)
class Timings:
    """Every duration of the bot, in seconds (defaults: production values).

    The reply budget: a message must be answered within ``reply_deadline``
    (30 s, the contract). Answer generation gets ``answer_budget`` of it and
    model calls stop ``fallback_reserve`` before that, so the local fallbacks
    (cache, template, apology) always have time; the rest is for sending.
    """

    reply_deadline: float = 30.0
    answer_budget: float = 22.0
    fallback_reserve: float = 1.0
    # LLM calls: the original design's two retry policies and its breaker.
    llm_attempt_timeout: float = 10.0
    llm_client_timeout: float = 12.0  # openai's own, above ours: our Timeout fires first
    network_backoff_initial: float = 1.0
    network_backoff_max: float = 10.0
    rate_limit_backoff_initial: float = 5.0
    rate_limit_backoff_max: float = 60.0
    rate_limit_deadline: float = 8.0  # waiting out the primary's 429s; then the secondary
    breaker_window: float = 60.0
    breaker_bucket: float = 1.0
    breaker_slow_call: float = 5.0
    breaker_open: float = 60.0
    # Bulkheads: the original design's three pools.
    core_max_wait: float = 5.0
    tools_max_wait: float = 30.0
    analytics_max_wait: float = 1.0
    tool_timeout: float = 10.0
    analytics_timeout: float = 1.0
    # Telegram.
    poll_timeout: float = 25.0  # getUpdates' long poll; Telegram takes whole seconds
    poll_backoff_initial: float = 1.0
    poll_backoff_max: float = 30.0
    inflight_poll_interval: float = 0.5  # re-poll while updates are being handled
    send_timeout: float = 10.0
    send_backoff_initial: float = 1.0
    send_backoff_max: float = 10.0
    send_max_retry_after: float = 60.0  # flood control waits up to this are waited out
    redeliver_after: float = 5.0  # an update whose reply could not be sent is tried again
    # State.
    state_ttl: float = 3600.0  # Redis keys expire an hour after the last write
    store_timeout: float = 2.0
    store_backoff: float = 0.05

    def scaled(self, factor: float, **overrides: float) -> Timings:
        """Every duration times ``factor`` (the demo and tests use < 1), then ``overrides``.

        ``poll_timeout`` stays a whole number of seconds, at least 1;
        ``send_max_retry_after`` is not scaled: Telegram's hints are whole seconds.
        """
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"Timings.scaled: factor must be a finite number > 0, got {factor!r}")
        values = {
            f.name: getattr(self, f.name) * factor
            for f in dataclasses.fields(self)
            if f.name not in ("send_max_retry_after", "state_ttl")
        }
        values["poll_timeout"] = float(max(1, round(self.poll_timeout * factor)))
        values.update(overrides)
        return dataclasses.replace(self, **values)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the bot connects to. Build with :meth:`from_env` or directly."""

    bot_token: str
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    llm_base_url: str = DEFAULT_LLM_BASE_URL
    llm_api_key: str = "not-needed"
    primary_model: str = "gpt-4o"
    secondary_model: str = "gpt-4o-mini"
    state_store_url: str = DEFAULT_STORE_URL
    metrics_port: int | None = None
    timings: Timings = field(default_factory=Timings)
    history_turns: int = 12  # earlier messages (user and bot) sent with each LLM request
    history_kept: int = 40  # messages kept per chat in the store

    def __post_init__(self) -> None:
        if not self.bot_token:
            raise ValueError(f"Settings: bot_token must be set (BOT_TOKEN), got {self.bot_token!r}")
        if not self.state_store_url.startswith(("sqlite:///", "redis://", "rediss://")):
            raise ValueError(
                "Settings: state_store_url must start with sqlite:///, redis:// or rediss://, "
                f"got {self.state_store_url!r}"
            )
        if self.history_turns < 10:  # the contract: >= 5 turns, a turn being a user and a bot text
            raise ValueError(f"Settings: history_turns must be >= 10, got {self.history_turns!r}")
        if self.history_kept < self.history_turns:
            raise ValueError(
                f"Settings: history_kept must be >= history_turns, got {self.history_kept!r}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment variables listed in the module docstring."""
        env = os.environ if env is None else env
        port = env.get("METRICS_PORT", "").strip()
        if port and not port.isdigit():
            raise ValueError(f"Settings: METRICS_PORT must be a port number, got {port!r}")
        return cls(
            bot_token=env.get("BOT_TOKEN", ""),
            telegram_api_url=env.get("TELEGRAM_API_URL") or DEFAULT_TELEGRAM_API_URL,
            llm_base_url=env.get("LLM_BASE_URL") or DEFAULT_LLM_BASE_URL,
            llm_api_key=env.get("LLM_API_KEY") or "not-needed",
            primary_model=env.get("LLM_PRIMARY_MODEL") or "gpt-4o",
            secondary_model=env.get("LLM_SECONDARY_MODEL") or "gpt-4o-mini",
            state_store_url=env.get("STATE_STORE_URL") or DEFAULT_STORE_URL,
            metrics_port=int(port) if port else None,
        )
