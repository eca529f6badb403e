"""Configuration: settings from the environment and an optional file, validated at start.

The contract's variables (DESIGN.md, "The example bot's outside"):

- ``BOT_TOKEN``: the bot's token (required for ``run``; never logged).
- ``TELEGRAM_API_URL``: the Bot API server's root, without ``/bot…``
  (default ``https://api.telegram.org``).
- ``LLM_BASE_URL``: an OpenAI-compatible server including ``/v1``
  (default ``https://api.openai.com/v1``); ``LLM_API_KEY``;
  ``LLM_PRIMARY_MODEL`` (default ``gpt-4o``), ``LLM_SECONDARY_MODEL``
  (default ``gpt-4o-mini``).
- ``STATE_STORE_URL``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``
  (default ``sqlite:///telegram_bot.db``) or ``redis://…``.
- ``METRICS_PORT``: serve ``/metrics`` and ``/health`` on this port; unset: not served.

Production additions (see ``docs/bot-production.md``), each with its default:

- ``BOT_MODE``: ``polling`` (default) or ``webhook``.
- ``WEBHOOK_SECRET``: required in webhook mode; Telegram sends it in
  ``X-Telegram-Bot-Api-Secret-Token`` (1 to 256 of ``A-Z a-z 0-9 _ -``).
- ``WEBHOOK_URL``: the public HTTPS address registered with ``setWebhook``
  at start (unset: not registered, e.g. done once by the deployment).
- ``WEBHOOK_HOST`` (``0.0.0.0``), ``WEBHOOK_PORT`` (``8080``; ``0``: any free
  port), ``WEBHOOK_PATH`` (``/webhook``), ``WEBHOOK_MAX_CONNECTIONS`` (40).
- ``METRICS_HOST`` (``0.0.0.0``); ``REPLICA_ID`` (host name and process id).
- ``STATE_STORE_PREFIX`` (``tgbot:``): every Redis key's prefix (replicas of
  one bot share it).
- ``SHARED_BREAKERS`` (``true``): with a Redis state store, the breakers share
  their state through Redis too.
- ``MAX_MESSAGE_LENGTH`` (4096 characters, Telegram's limit),
  ``CHAT_RATE_LIMIT`` (``off``; ``20/60``: 20 messages per chat in 60 s),
  ``ADMIN_IDS`` (user ids, comma-separated; default none).
- ``BOT_FLAGS``: the feature flags as JSON (see :mod:`.flags`).
- ``BOT_CONFIG``: a TOML file with any of the above, keys in lower case
  (``bot_token = "…"``, ``admin_ids = [1, 2]``, a ``[flags.<name>]`` table per
  flag, a ``[timings]`` table for :class:`Timings`). The environment wins
  over the file.

Every problem is reported at start, all at once, naming the variable (or the
file's key) and the value (never a secret's value).

All durations live in :class:`Timings`, in seconds, with the production
values as defaults; the demo and the tests shrink them with
:meth:`Timings.scaled` instead of patching anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .flags import Flags

__all__ = ["ConfigError", "Limits", "Settings", "Timings"]

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"
DEFAULT_STORE_URL = "sqlite:///telegram_bot.db"


_NOT_SCALED = frozenset({"send_max_retry_after", "state_ttl", "dedupe_ttl", "health_timeout"})


@dataclass(frozen=True, slots=True)
class Timings:
    """Every duration of the bot, in seconds (defaults: production values).

    The reply budget: a message must be answered within ``reply_deadline``
    (30 s, the contract). Answer generation gets ``answer_budget`` of it and
    model calls stop ``fallback_reserve`` before that, so the local fallbacks
    (cache, template, apology) always have time; the rest is for sending.
    The primary model may use ``primary_budget`` of the answer budget, so that
    a primary that hangs leaves the secondary time for a full attempt.
    """

    reply_deadline: float = 30.0
    answer_budget: float = 22.0
    fallback_reserve: float = 1.0
    # The primary model's share of answer_budget: a primary that hangs (three 10 s
    # attempts) would take it all and leave the secondary nothing. 11 s leaves the
    # secondary one full llm_attempt_timeout: 11 + 10 + fallback_reserve 1 = 22.
    primary_budget: float = 11.0
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
    busy_poll_gap: float = 0.005  # ... but no more often than this
    send_timeout: float = 10.0
    typing_delay: float = 1.0  # "typing…" only for answers slower than this
    send_backoff_initial: float = 1.0
    send_backoff_max: float = 10.0
    send_max_retry_after: float = 60.0  # flood control waits up to this are waited out
    redeliver_after: float = 5.0  # an update whose reply could not be sent is tried again
    # State.
    state_ttl: float = 3600.0  # Redis keys expire an hour after the last write
    store_timeout: float = 2.0
    store_backoff: float = 0.05
    dedupe_ttl: float = 86400.0  # an update id is remembered a day (Telegram's redelivery horizon)
    health_timeout: float = 1.0  # /health's store ping
    # Replicas: the per-chat lock in Redis.
    # A lock outlives its holder's crash by at most this: short enough that the
    # chat's next message is still answered within the reply deadline (a live
    # holder extends it every third of it, however long it works).
    chat_lock_ttl: float = 10.0
    chat_lock_wait: float = 30.0  # a replica waits this long for another to finish a chat
    # Stopping: webhook requests still being handled get this long to finish, then
    # are cut off (Telegram delivers those updates again), so that a stop fits in a
    # container's grace period (Kubernetes: 30 s) whatever a dependency does.
    stop_grace: float = 5.0

    def __post_init__(self) -> None:
        # The budget split only works when its parts fit: say which rule is broken.
        broken = []
        if not self.answer_budget < self.reply_deadline:
            broken.append(
                f"answer_budget ({self.answer_budget!r}) must be < reply_deadline "
                f"({self.reply_deadline!r}): the rest of the deadline is for sending"
            )
        needed = self.primary_budget + self.llm_attempt_timeout + self.fallback_reserve
        if needed > self.answer_budget * (1 + 1e-9):  # (scaled values round)
            broken.append(
                f"primary_budget + llm_attempt_timeout + fallback_reserve ({needed!r}) "
                f"must be <= answer_budget ({self.answer_budget!r}): the secondary "
                "model's attempt must fit after the primary's share"
            )
        if broken:
            raise ValueError("Timings: " + "; ".join(broken))

    def scaled(self, factor: float, **overrides: float) -> Timings:
        """Every duration times ``factor`` (the demo and tests use < 1), then ``overrides``.

        ``poll_timeout`` stays a whole number of seconds, at least 1;
        ``send_max_retry_after`` is not scaled (Telegram's hints are whole seconds),
        nor are the TTLs of stored records and ``health_timeout`` (a network ping).
        """
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"Timings.scaled: factor must be a finite number > 0, got {factor!r}")
        values = {
            f.name: getattr(self, f.name) * factor
            for f in dataclasses.fields(self)
            if f.name not in _NOT_SCALED
        }
        values["poll_timeout"] = float(max(1, round(self.poll_timeout * factor)))
        values.update(overrides)
        return dataclasses.replace(self, **values)


@dataclass(frozen=True, slots=True)
class Limits:
    """Abuse limits. A message over a limit gets a polite notice, never an LLM call.

    ``max_message_length``: characters (default 4096, Telegram's own limit:
    nothing is refused unless set lower); ``rate_messages`` per chat within
    ``rate_window`` seconds (default ``None``: no limit, so that by default
    every message reaches the LLM chain, as the bot's contract says; 20 in
    60 s is a sane production value; messages over it are not counted, so a
    chat that slows down is served again as its older messages leave the
    window); ``admin_ids``: users who may use the admin commands ``/stats`` and
    ``/flags`` (default none).
    """

    max_message_length: int = 4096
    rate_messages: int | None = None
    rate_window: float = 60.0
    admin_ids: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if _not_int(self.max_message_length) or self.max_message_length < 1:
            raise ValueError(
                f"Limits: max_message_length must be an integer >= 1, "
                f"got {self.max_message_length!r}"
            )
        if self.rate_messages is not None and (
            _not_int(self.rate_messages) or self.rate_messages < 1
        ):
            raise ValueError(
                f"Limits: rate_messages must be an integer >= 1, got {self.rate_messages!r}"
            )
        w = self.rate_window
        if (
            isinstance(w, bool)
            or not isinstance(w, int | float)
            or not (math.isfinite(w) and w > 0)
        ):
            raise ValueError(f"Limits: rate_window must be a number of seconds > 0, got {w!r}")


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


Mode = Literal["polling", "webhook"]
_TOKEN = re.compile(r"\d+:[A-Za-z0-9_-]+")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the bot connects to and how it runs. Build with :meth:`from_env` or directly.

    Secrets (the token, the webhook secret, the LLM key) are left out of the repr.
    """

    bot_token: str = field(repr=False)
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    llm_base_url: str = DEFAULT_LLM_BASE_URL
    llm_api_key: str = field(default="not-needed", repr=False)
    primary_model: str = "gpt-4o"
    secondary_model: str = "gpt-4o-mini"
    state_store_url: str = DEFAULT_STORE_URL
    state_store_prefix: str = "tgbot:"
    metrics_port: int | None = None
    timings: Timings = field(default_factory=Timings)
    history_turns: int = 12  # earlier messages (user and bot) sent with each LLM request
    history_kept: int = 40  # messages kept per chat in the store
    mode: Mode = "polling"
    webhook_secret: str = field(default="", repr=False)
    webhook_url: str | None = None
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 8080
    webhook_path: str = "/webhook"
    webhook_max_connections: int = 40
    metrics_host: str = "0.0.0.0"
    replica_id: str = field(default_factory=_default_replica_id)
    shared_breakers: bool = True
    limits: Limits = field(default_factory=Limits)
    flags: Flags = field(default_factory=Flags)

    def __post_init__(self) -> None:
        # Every broken rule is reported, not just the first: one start shows them all.
        problems: list[str] = []
        if not self.bot_token:
            problems.append(f"Settings: bot_token must be set (BOT_TOKEN), got {self.bot_token!r}")
        elif not _TOKEN.fullmatch(self.bot_token):
            # Never the value: this message may end up in a log.
            problems.append(
                "Settings: bot_token (BOT_TOKEN) must look like <digits>:<letters, digits, _ or ->,"
                f" got {len(self.bot_token)} characters that do not (value not shown)"
            )
        if not self.state_store_url.startswith(("sqlite:///", "redis://", "rediss://")):
            problems.append(
                "Settings: state_store_url must start with sqlite:///, redis:// or rediss://, "
                f"got {self.state_store_url!r}"
            )
        if self.history_turns < 10:  # the contract: >= 5 turns, a turn being a user and a bot text
            problems.append(f"Settings: history_turns must be >= 10, got {self.history_turns!r}")
        if self.history_kept < self.history_turns:
            problems.append(
                f"Settings: history_kept must be >= history_turns, got {self.history_kept!r}"
            )
        if self.mode not in ("polling", "webhook"):
            problems.append(f"Settings: mode must be 'polling' or 'webhook', got {self.mode!r}")
        if self.mode == "webhook" and not self.webhook_secret:
            problems.append(
                "Settings: webhook_secret must be set in webhook mode (WEBHOOK_SECRET): "
                "without it anyone who finds the address can post updates"
            )
        if self.webhook_secret and not _SECRET.fullmatch(self.webhook_secret):
            problems.append(
                "Settings: webhook_secret (WEBHOOK_SECRET) must be 1 to 256 of A-Z, a-z, 0-9, "
                f"_ and -, got {len(self.webhook_secret)} characters that are not (value not shown)"
            )
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("https://", "http://")
        ):
            problems.append(
                f"Settings: webhook_url must be an http(s) URL, got {self.webhook_url!r}"
            )
        if not self.webhook_path.startswith("/"):
            problems.append(
                f"Settings: webhook_path must start with '/', got {self.webhook_path!r}"
            )
        for name in ("webhook_port", "metrics_port"):
            port = getattr(self, name)
            if port is not None and (_not_int(port) or not 0 <= port <= 65535):
                problems.append(f"Settings: {name} must be a port number 0..65535, got {port!r}")
        if not 1 <= self.webhook_max_connections <= 100:  # Telegram's range
            problems.append(
                "Settings: webhook_max_connections must be 1..100, "
                f"got {self.webhook_max_connections!r}"
            )
        if not self.replica_id:
            problems.append(f"Settings: replica_id must not be empty, got {self.replica_id!r}")
        if problems:
            raise ConfigError(problems)

    def secrets(self) -> list[str]:
        """What must never be logged: the token, the webhook secret, the LLM key and
        the Redis password (see :mod:`.redact`)."""
        password = urllib.parse.urlsplit(self.state_store_url).password
        found = [self.bot_token, self.webhook_secret, self.llm_api_key, password or ""]
        return [s for s in found if s]

    @property
    def uses_redis(self) -> bool:
        return self.state_store_url.startswith(("redis://", "rediss://"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment variables listed in the module docstring (and ``BOT_CONFIG``).

        Raises :class:`ConfigError` (a ``ValueError``) listing every problem found.
        """
        env = os.environ if env is None else env
        raw: dict[str, tuple[Any, str]] = {}  # key (lower case) -> (value, where it came from)
        problems: list[str] = []
        path = env.get("BOT_CONFIG", "").strip()
        if path:
            try:
                for key, value in _read_file(Path(path)).items():
                    raw[key] = (value, f"{key} in {path}")
            except ValueError as exc:
                problems.append(str(exc))
        for name in _ENV_KEYS:
            value = env.get(name, "").strip()
            if value:
                raw[name.lower()] = (value, name)
        unknown = sorted(k for k in raw if k not in _KEYS)
        problems += [f"{raw[k][1]}: unknown setting (known: {', '.join(_KEYS)})" for k in unknown]
        kwargs: dict[str, Any] = {}
        for key, (value, where) in raw.items():
            if key not in _KEYS:
                continue
            target, parse = _KEYS[key]
            try:
                kwargs[target] = parse(value)
            except ValueError as exc:
                problems.append(f"{where} {exc}")
        limits: dict[str, Any] = kwargs.pop("limits", {})
        for key in ("max_message_length", "admin_ids"):
            if key in kwargs:
                limits[key] = kwargs.pop(key)
        if problems:
            raise ConfigError(problems)
        try:
            if limits:
                kwargs["limits"] = Limits(**limits)
            return cls(bot_token=kwargs.pop("bot_token", ""), **kwargs)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None


class ConfigError(ValueError):
    """The configuration is wrong; ``problems`` lists each mistake (one line each)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            super().__init__(problems[0])
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            super().__init__(f"{len(problems)} configuration problems:\n{lines}")


# --- parsing ----------------------------------------------------------------------


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"BOT_CONFIG: cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"BOT_CONFIG: {str(path)!r} is not valid TOML: {exc}") from None
    return data


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _secret(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got a {type(value).__name__} (value not shown)")
    return value


def _url(value: Any) -> str:
    text = _text(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {text!r}")
    return text.rstrip("/")


def _port(value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > 65535:
        raise ValueError(f"must be a port number, got {value!r}")
    return int(text)


def _positive_int(value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"must be an integer >= 1, got {value!r}")
    return int(text)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _mode(value: Any) -> str:
    text = _text(value).strip().lower()
    if text not in ("polling", "webhook"):
        raise ValueError(f"must be 'polling' or 'webhook', got {value!r}")
    return text


def _ids(value: Any) -> frozenset[int]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"must be user ids, comma-separated or a list, got {value!r}")
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if isinstance(item, bool) or not text.lstrip("-").isdigit():
            raise ValueError(f"must be user ids (integers), got {item!r} in {value!r}")
        out.add(int(text))
    return frozenset(out)


def _rate(value: Any) -> dict[str, Any]:
    """``"20/60"``: 20 messages per 60 seconds; ``"off"``: no limit."""
    text = str(value).strip()
    if text.lower() in ("off", "none"):
        return {"rate_messages": None}
    count, _, window = text.partition("/")
    try:
        limits = Limits(rate_messages=int(count), rate_window=float(window))
    except ValueError:
        raise ValueError(
            f"must be <messages>/<seconds> with both > 0, like 20/60, or off, got {value!r}"
        ) from None
    return {"rate_messages": limits.rate_messages, "rate_window": limits.rate_window}


def _flags(value: Any) -> Flags:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be JSON ({exc.msg} at character {exc.pos})") from None
    return Flags.parse(value, source="flags")


def _timings(value: Any) -> Timings:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a table of durations in seconds, got {value!r}")
    known = {f.name for f in dataclasses.fields(Timings)}
    values: dict[str, float] = {}
    for key, number in value.items():
        if key not in known:
            raise ValueError(f"unknown duration {key!r} (known: {', '.join(sorted(known))})")
        ok = isinstance(number, int | float) and not isinstance(number, bool)
        if not ok or not (math.isfinite(number) and number > 0):
            raise ValueError(f"{key} must be a number of seconds > 0, got {number!r}")
        values[key] = float(number)
    return dataclasses.replace(Timings(), **values)


# key (env var in lower case, or file key) -> (Settings field, parser)
_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "bot_token": ("bot_token", _secret),
    "telegram_api_url": ("telegram_api_url", _url),
    "llm_base_url": ("llm_base_url", _url),
    "llm_api_key": ("llm_api_key", _secret),
    "llm_primary_model": ("primary_model", _text),
    "llm_secondary_model": ("secondary_model", _text),
    "state_store_url": ("state_store_url", _text),
    "state_store_prefix": ("state_store_prefix", _text),
    "metrics_port": ("metrics_port", _port),
    "metrics_host": ("metrics_host", _text),
    "bot_mode": ("mode", _mode),
    "webhook_secret": ("webhook_secret", _secret),
    "webhook_url": ("webhook_url", _url),
    "webhook_host": ("webhook_host", _text),
    "webhook_port": ("webhook_port", _port),
    "webhook_path": ("webhook_path", _text),
    "webhook_max_connections": ("webhook_max_connections", _positive_int),
    "replica_id": ("replica_id", _text),
    "shared_breakers": ("shared_breakers", _bool),
    "max_message_length": ("max_message_length", _positive_int),
    "chat_rate_limit": ("limits", _rate),
    "admin_ids": ("admin_ids", _ids),
    "bot_flags": ("flags", _flags),
    "flags": ("flags", _flags),  # the file's [flags] tables
    "timings": ("timings", _timings),  # the file's [timings] table
}
_ENV_KEYS = tuple(k.upper() for k in _KEYS if k not in ("flags", "timings"))
