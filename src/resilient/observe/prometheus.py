"""Prometheus metrics for every policy (extra ``prometheus``).

``PrometheusObserver(registry=None)`` is an observer: attach it to every
policy with ``resilient.add_observer(observer)``, or to some with
``observers=[observer]``. It turns events into prometheus-client metrics on
``registry`` (default: prometheus-client's global ``REGISTRY``), so
``generate_latest()`` or ``start_http_server()`` exports them.

Two sources feed the metrics:

- **events**, counted as they happen: calls by outcome, durations,
  rejections, breaker transitions, retries, fallbacks;
- **live policies**, read at scrape time: breaker state and rates, bulkhead
  permits. Only the policies this observer listens to (all of them when it
  was added globally) are read, from whichever thread scrapes.

Labels are policy kinds, policy names, and small fixed sets (outcomes,
reasons, states) plus exception *type* names: never arguments, values or
error messages, so the number of series is bounded by the policies you
create. :data:`METRICS` lists every metric with its labels; the docs page
``observability.md`` explains each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, final

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - exercised by a test faking the absence
    raise ImportError(
        "resilient.observe.prometheus needs prometheus-client: "
        "pip install 'resilient-policies[prometheus]'"
    ) from exc

from .._events import (
    CallFinished,
    CallRejected,
    Event,
    FallbackUsed,
    RetryGaveUp,
    RetryScheduled,
    StateChanged,
    TimedOut,
)
from .snapshot import STATE_CODES, gauge_readings

__all__ = ["DEFAULT_BUCKETS", "METRICS", "STATE_CODES", "MetricInfo", "PrometheusObserver"]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Seconds; prometheus-client's defaults plus 30 s and 60 s (LLM-sized calls)."""


@final
@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One exported metric: its exposed ``name``, ``type``, ``labels`` and ``help``."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(
        "resilient_calls_total",
        "counter",
        ("kind", "name", "outcome"),
        "Calls through a policy by outcome: success, slow, failure, ignored, cancelled, "
        "rejected, timeout, fallback.",
    ),
    MetricInfo(
        "resilient_call_errors_total",
        "counter",
        ("kind", "name", "error"),
        "Calls that ended with an exception (not a cancellation), by its type name.",
    ),
    MetricInfo(
        "resilient_call_duration_seconds",
        "histogram",
        ("kind", "name"),
        "Duration of the calls a policy timed (circuit breakers time every call they run).",
    ),
    MetricInfo(
        "resilient_rejections_total",
        "counter",
        ("kind", "name", "reason"),
        "Calls refused without running: open, forced_open, half_open_full, queue_full, max_wait.",
    ),
    MetricInfo(
        "resilient_circuit_breaker_state",
        "gauge",
        ("name",),
        "Breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled.",
    ),
    MetricInfo(
        "resilient_circuit_breaker_failure_rate",
        "gauge",
        ("name",),
        "Failure rate (0 to 1) in the breaker's current window.",
    ),
    MetricInfo(
        "resilient_circuit_breaker_slow_call_rate",
        "gauge",
        ("name",),
        "Slow-call rate (0 to 1) in the breaker's current window.",
    ),
    MetricInfo(
        "resilient_circuit_breaker_transitions_total",
        "counter",
        ("name", "from_state", "to_state"),
        "Breaker state transitions.",
    ),
    MetricInfo(
        "resilient_bulkhead_active",
        "gauge",
        ("name",),
        "Bulkhead permits held now.",
    ),
    MetricInfo(
        "resilient_bulkhead_waiting",
        "gauge",
        ("name",),
        "Calls waiting for a bulkhead permit now.",
    ),
    MetricInfo(
        "resilient_bulkhead_max_concurrent",
        "gauge",
        ("name",),
        "Bulkhead permits in all (max_concurrent).",
    ),
    MetricInfo(
        "resilient_retries_total",
        "counter",
        ("name", "error"),
        "Retries scheduled, by what the failed attempt raised (or 'result' for a retried value).",
    ),
    MetricInfo(
        "resilient_retry_give_ups_total",
        "counter",
        ("name", "reason"),
        "Retries that gave up with the last attempt still failing, by reason: attempts, "
        "deadline, retry_after.",
    ),
    MetricInfo(
        "resilient_fallbacks_total",
        "counter",
        ("kind", "name", "strategy"),
        "Answers given by a fallback or a fallback chain's strategy.",
    ),
)
"""Every metric the observer exports, as exposed (counters with their ``_total``)."""

_INFO = {m.name: m for m in METRICS}


class _Labelled:
    """A metric plus a cache of its label children (``labels()`` validates on every call)."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(*labels)
        return child


def _counter(name: str, registry: CollectorRegistry) -> _Labelled:
    info = _INFO[name]
    return _Labelled(Counter(name, info.help, info.labels, registry=registry))


@final
class PrometheusObserver:
    """Turns policy events into Prometheus metrics; see the module docstring.

    ``registry=None``: the prometheus-client registry to register on (default
    its global ``REGISTRY``). ``buckets``: the duration histogram's upper
    bounds in seconds (default :data:`DEFAULT_BUCKETS`). One observer per
    registry: a second one on the same registry raises prometheus-client's
    ``ValueError`` about duplicated time series.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        reg: CollectorRegistry = REGISTRY if registry is None else registry
        self.registry = reg
        self._calls = _counter("resilient_calls_total", reg)
        self._errors = _counter("resilient_call_errors_total", reg)
        info = _INFO["resilient_call_duration_seconds"]
        self._duration = _Labelled(
            Histogram(info.name, info.help, info.labels, registry=reg, buckets=tuple(buckets))
        )
        self._rejections = _counter("resilient_rejections_total", reg)
        self._transitions = _counter("resilient_circuit_breaker_transitions_total", reg)
        self._retries = _counter("resilient_retries_total", reg)
        self._give_ups = _counter("resilient_retry_give_ups_total", reg)
        self._fallbacks = _counter("resilient_fallbacks_total", reg)
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            CallFinished: self._finished,
            CallRejected: self._rejected,
            StateChanged: self._changed,
            RetryScheduled: self._retry,
            RetryGaveUp: self._gave_up,
            TimedOut: self._timed_out,
            FallbackUsed: self._fallback,
        }
        self._live = _LiveCollector(self)
        reg.register(self._live)

    def unregister(self) -> None:
        """Take every metric of this observer off its registry.

        The observer itself stays attached where it was added (it would go on
        counting into metrics nobody reads): ``remove_observer`` it as well.
        """
        for labelled in (
            self._calls,
            self._errors,
            self._duration,
            self._rejections,
            self._transitions,
            self._retries,
            self._give_ups,
            self._fallbacks,
        ):
            self.registry.unregister(labelled.metric)
        self.registry.unregister(self._live)

    def __call__(self, event: Event) -> None:
        """Count one event (events this observer has no metric for are ignored)."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _finished(self, e: CallFinished) -> None:
        outcome = "slow" if e.outcome == "success" and e.slow else e.outcome
        self._calls(e.kind, e.name, outcome).inc()
        self._duration(e.kind, e.name).observe(e.duration)
        # A cancellation is no error (its "error" is CancelledError or Cancelled).
        if e.error is not None and e.outcome != "cancelled":
            self._errors(e.kind, e.name, e.error).inc()

    def _rejected(self, e: CallRejected) -> None:
        self._calls(e.kind, e.name, "rejected").inc()
        self._rejections(e.kind, e.name, e.reason).inc()

    def _changed(self, e: StateChanged) -> None:
        self._transitions(e.name, e.old, e.new).inc()

    def _retry(self, e: RetryScheduled) -> None:
        self._retries(e.name, e.error or "result").inc()

    def _gave_up(self, e: RetryGaveUp) -> None:
        self._give_ups(e.name, e.reason).inc()

    def _timed_out(self, e: TimedOut) -> None:
        self._calls(e.kind, e.name, "timeout").inc()
        self._errors(e.kind, e.name, "TimeoutExceeded").inc()

    def _fallback(self, e: FallbackUsed) -> None:
        self._calls(e.kind, e.name, "fallback").inc()
        self._fallbacks(e.kind, e.name, e.strategy).inc()

    def __repr__(self) -> str:
        return f"PrometheusObserver(registry={self.registry!r})"


class _LiveCollector:
    """Reads the live breakers and bulkheads the observer listens to, at scrape time."""

    def __init__(self, observer: PrometheusObserver) -> None:
        self._observer = observer

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {
            m.name: GaugeMetricFamily(m.name, m.help, labels=m.labels)
            for m in METRICS
            if m.type == "gauge"
        }

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        observer = self._observer
        readings = gauge_readings(lambda p: observer in p._listeners)
        for key, values in readings.items():
            family = families["resilient_" + key.replace(".", "_")]
            for name, number in values.items():
                family.add_metric([name], number)
        yield from families.values()
