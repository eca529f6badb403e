"""``/metrics`` (Prometheus text) and ``/health`` (JSON), served when ``METRICS_PORT`` is set.

``/metrics`` is one prometheus-client ``CollectorRegistry`` per bot (never the
global one, so two bots in one process keep separate books) holding:

- the library's :class:`~resilient.observe.prometheus.PrometheusObserver`,
  an observer of every policy of the bot: ``resilient_calls_total``,
  ``resilient_call_duration_seconds``, ``resilient_circuit_breaker_state``,
  ``resilient_circuit_breaker_transitions_total``, … (``docs/observability.md``);
- the bot's own counters, read from :class:`~.stats.BotStats` at scrape time
  (:data:`BOT_METRICS` lists them with their labels).

``/health`` reads the bot's policies with the library's snapshot
(:func:`resilient.observe.snapshot.read_policy`, the figures
``resilient.snapshot()`` reports, limited to this bot's policies) and its
``health_score()``, and pings the state store. ``status`` is ``ok``;
``degraded`` while a breaker is open (the bot still answers, from a
fallback); ``unavailable`` when the store does not answer within
``health_timeout`` (HTTP 503: take this replica out of the load balancer, it
cannot answer anyone). With shared breakers, ``breaker_store.degraded`` says
whether they sync through Redis now (if not, each replica's breakers work on
their own until Redis answers again; the bot still answers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from resilient import Policy, Snapshot
from resilient.observe.prometheus import PrometheusObserver
from resilient.observe.snapshot import read_policy

from .redact import redact
from .stats import BotStats
from .stores import StateStore

__all__ = ["BOT_METRICS", "BotMetrics", "HealthCheck", "metrics_routes"]

BOT_METRICS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("bot_messages_in", "counter", (), "Text messages taken in (each update once)."),
    ("bot_replies_out", "counter", (), "Replies delivered (a split reply counts once)."),
    ("bot_parts_sent", "counter", (), "sendMessage calls that delivered a part of a reply."),
    ("bot_send_failures", "counter", (), "Replies not delivered after every retry."),
    ("bot_answers", "counter", ("level",), "Replies by who produced them: a fallback level, "
     "flow, tool, reset, error, admin, or a notice."),
    ("bot_state_transitions", "counter", ("from", "to"), "Changes of a chat's decision state."),
    ("bot_state_resets", "counter", ("reason",), "Chats sent back to IDLE: command or error."),
    ("bot_notices", "counter", ("reason",), "Notices instead of an answer: too_long, "
     "rate_limited, refused (an admin command from a non-admin)."),
    ("bot_retries", "counter", ("policy",), "Retries scheduled, by retry policy."),
    ("bot_breaker_transitions", "counter", ("breaker", "to"), "Breaker state changes."),
    ("bot_duplicates_skipped", "counter", (), "Updates seen again after being answered."),
    ("bot_redelivered", "counter", (), "Recorded replies sent again after a failure."),
    ("bot_chat_lock_timeouts", "counter", (), "Updates left for later: their chat stayed busy."),
    ("bot_webhook_refused", "counter", (), "Webhook requests refused (wrong or no secret)."),
    ("bot_health_score", "gauge", (), "The library's health score of the bot's policies, 0..1."),
)  # fmt: skip
"""Every metric of the bot's own: name (counters get ``_total``), type, labels, help."""


@dataclass(frozen=True, slots=True)
class _Reading:
    name: str
    labels: tuple[str, ...]
    value: float


class _BotCollector:
    """The bot's counters, read from ``stats`` at scrape time."""

    def __init__(self, stats: BotStats, score: Callable[[], float]) -> None:
        self._stats = stats
        self._score = score

    def _readings(self) -> Iterator[_Reading]:
        s = self._stats
        yield _Reading("bot_messages_in", (), s.messages_in)
        yield _Reading("bot_replies_out", (), s.replies_out)
        yield _Reading("bot_parts_sent", (), s.parts_sent)
        yield _Reading("bot_send_failures", (), s.send_failures)
        for level, n in sorted(s.levels.items()):
            yield _Reading("bot_answers", (level,), n)
        for (old, new), n in sorted(s.state_transitions.items()):
            yield _Reading("bot_state_transitions", (old, new), n)
        for reason, n in sorted(s.resets.items()):
            yield _Reading("bot_state_resets", (reason,), n)
        for reason, n in sorted(s.notices.items()):
            yield _Reading("bot_notices", (reason,), n)
        for policy, n in sorted(s.retries.items()):
            yield _Reading("bot_retries", (policy,), n)
        counted: dict[tuple[str, str], int] = {}
        for t in s.transitions:
            counted[(t.breaker, t.new)] = counted.get((t.breaker, t.new), 0) + 1
        for key, n in sorted(counted.items()):
            yield _Reading("bot_breaker_transitions", key, n)
        yield _Reading("bot_duplicates_skipped", (), s.duplicates_skipped)
        yield _Reading("bot_redelivered", (), s.redelivered)
        yield _Reading("bot_chat_lock_timeouts", (), s.lock_timeouts)
        yield _Reading("bot_webhook_refused", (), s.webhook_refused)
        yield _Reading("bot_health_score", (), self._score())

    def _families(self) -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name, kind, labels, help_text in BOT_METRICS:
            if kind == "counter":
                families[name] = CounterMetricFamily(name, help_text, labels=list(labels))
            else:
                families[name] = GaugeMetricFamily(name, help_text, labels=list(labels))
        return families

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for r in self._readings():
            family = families[r.name]
            family.add_metric(list(r.labels), r.value)
        yield from families.values()


class BotMetrics:
    """The bot's registry: the library's observer plus the bot's own counters.

    ``observer`` goes into every policy's ``observers=``; ``render()`` is the
    ``/metrics`` body.
    """

    def __init__(self, stats: BotStats, policies: Iterable[Policy] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.observer = PrometheusObserver(self.registry)
        self.policies: tuple[Policy, ...] = tuple(policies)  # read by snapshot()
        self.registry.register(_BotCollector(stats, self.health_score))

    def snapshot(self) -> Snapshot:
        """The bot's policies now, as ``resilient.snapshot()`` reads them."""
        read = sorted((read_policy(p) for p in self.policies), key=lambda p: (p.kind, p.name))
        try:
            taken_at: float | None = anyio.current_time()
        except Exception:  # a scrape from outside the loop
            taken_at = None
        return Snapshot(tuple(read), taken_at)

    def health_score(self) -> float:
        return self.snapshot().health_score()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthCheck:
    """``/health``: the snapshot, the health score and whether the store answers."""

    def __init__(
        self,
        metrics: BotMetrics,
        stats: BotStats,
        store: StateStore,
        *,
        timeout: float,
        about: dict[str, Any],
        breaker_store: Any = None,
    ) -> None:
        self._metrics = metrics
        self._breaker_store = breaker_store
        self._stats = stats
        self._store = store
        self._timeout = timeout
        self._about = about

    async def _ping(self) -> dict[str, Any]:
        started = anyio.current_time()
        error: str | None = None
        try:
            with anyio.fail_after(self._timeout):
                await self._store.ping()
        except Exception as exc:
            error = redact(f"{type(exc).__name__}: {exc}")
        took = (anyio.current_time() - started) * 1000
        return {"reachable": error is None, "error": error, "ms": round(took, 2)}

    def _breaker_store_state(self) -> dict[str, Any] | None:
        """``None`` without a shared store; else whether it syncs (``degraded``: Redis
        unreachable, each breaker on its local state)."""
        shared = self._breaker_store
        if shared is None:
            return None
        return {"kind": type(shared).__name__, "degraded": bool(getattr(shared, "degraded", False))}

    async def check(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body)."""
        snap = self._metrics.snapshot()
        breakers = {p.name: p.state or "closed" for p in snap.of_kind("circuit_breaker")}
        store = await self._ping()
        degraded = any(s in ("open", "forced_open") for s in breakers.values())
        status = "unavailable" if not store["reachable"] else "degraded" if degraded else "ok"
        body = {
            "status": status,
            **self._about,
            "health_score": round(snap.health_score(), 4),
            "components": snap.health_components(),
            "breakers": breakers,
            "store": store,
            "breaker_store": self._breaker_store_state(),
            "messages_in": self._stats.messages_in,
            "replies_out": self._stats.replies_out,
            "policies": [p.as_dict() for p in snap.policies],
        }
        return (503 if status == "unavailable" else 200), body


def metrics_routes(metrics: BotMetrics, health: HealthCheck) -> Sequence[web.RouteDef]:
    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    async def get_health(_: web.Request) -> web.Response:
        status, body = await health.check()
        return web.Response(text=json.dumps(body), status=status, content_type="application/json")

    return [web.get("/metrics", get_metrics), web.get("/health", get_health)]
