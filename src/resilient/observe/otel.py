"""OpenTelemetry span events and metrics for every policy (extra ``otel``, API only).

``OpenTelemetryObserver(tracer_provider=None, meter_provider=None)`` is an
observer: attach it with ``resilient.add_observer(observer)`` or
``observers=[observer]``. It uses the OpenTelemetry *API* only, so whatever
SDK the application set up (exporters, views, sampling) receives the data;
without an SDK every call is a no-op of the API.

Span events, on the span current when the event happens (the call's own
span, typically a request's): ``resilient.retry``, ``resilient.retry.give_up``,
``resilient.rejected``, ``resilient.circuit_breaker.state_change``,
``resilient.fallback`` and ``resilient.timeout``. An event with no recording
span around it (a breaker forced open from a script, say) gets a short span
of its own, named after the event, from ``tracer_provider``'s tracer.

Metrics, from ``meter_provider``'s meter (instrument names in
:data:`INSTRUMENTS`): counters and a duration histogram fed by events, and
observable gauges that read the live breakers and bulkheads this observer
listens to when the SDK collects. Attributes are policy kinds and names,
small fixed sets, and exception type names (``error.type``): never
arguments, values or messages.

``tracer_provider=None`` and ``meter_provider=None`` mean the global
providers (``opentelemetry.trace.get_tracer_provider()`` and
``opentelemetry.metrics.get_meter_provider()``), read when the observer is
built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, final

try:
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - exercised by a test faking the absence
    raise ImportError(
        "resilient.observe.otel needs opentelemetry-api: pip install 'resilient-policies[otel]'"
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
from .snapshot import GAUGES, gauge_readings

__all__ = ["INSTRUMENTS", "SPAN_EVENTS", "OpenTelemetryObserver"]

KIND = "resilient.policy.kind"
NAME = "resilient.policy.name"
ERROR = "error.type"

INSTRUMENTS: Mapping[str, tuple[str, str, str]] = {
    # name: (instrument, unit, description)
    "resilient.calls": (
        "counter",
        "{call}",
        "Calls through a policy by resilient.outcome: success, slow, failure, ignored, "
        "cancelled, rejected, timeout, fallback.",
    ),
    "resilient.call.errors": ("counter", "{call}", "Calls that ended with an exception."),
    "resilient.call.duration": ("histogram", "s", "Duration of the calls a policy timed."),
    "resilient.rejections": ("counter", "{call}", "Calls refused without running."),
    "resilient.circuit_breaker.transitions": ("counter", "{transition}", "Breaker transitions."),
    "resilient.retries": ("counter", "{retry}", "Retries scheduled."),
    "resilient.retry.give_ups": ("counter", "{call}", "Retries that gave up."),
    "resilient.fallbacks": ("counter", "{call}", "Answers given by a fallback."),
    "resilient.circuit_breaker.state": (
        "gauge",
        "1",
        "Breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled.",
    ),
    "resilient.circuit_breaker.failure_rate": ("gauge", "1", "Failure rate in the window."),
    "resilient.circuit_breaker.slow_call_rate": ("gauge", "1", "Slow-call rate in the window."),
    "resilient.bulkhead.active": ("gauge", "{permit}", "Bulkhead permits held now."),
    "resilient.bulkhead.waiting": ("gauge", "{call}", "Calls waiting for a permit now."),
    "resilient.bulkhead.max_concurrent": ("gauge", "{permit}", "Bulkhead permits in all."),
}
"""Every instrument the observer creates: its kind, unit and description."""

SPAN_EVENTS = (
    "resilient.retry",
    "resilient.retry.give_up",
    "resilient.rejected",
    "resilient.circuit_breaker.state_change",
    "resilient.fallback",
    "resilient.timeout",
)
"""The names of the span events the observer adds."""


def _version() -> str:
    from .. import __version__

    return __version__


@final
class OpenTelemetryObserver:
    """Span events and metrics through the OpenTelemetry API; see the module docstring."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        version = _version()
        self._tracer = trace.get_tracer("resilient", version, tracer_provider=tracer_provider)
        meter = metrics.get_meter("resilient", version, meter_provider=meter_provider)
        made: dict[str, Any] = {}
        for name, (instrument, unit, description) in INSTRUMENTS.items():
            if instrument == "counter":
                made[name] = meter.create_counter(name, unit=unit, description=description)
            elif instrument == "histogram":
                made[name] = meter.create_histogram(name, unit=unit, description=description)
            else:
                key = name.removeprefix("resilient.")
                made[name] = meter.create_observable_gauge(
                    name, callbacks=[self._gauge(key)], unit=unit, description=description
                )
        self._calls = made["resilient.calls"]
        self._errors = made["resilient.call.errors"]
        self._duration = made["resilient.call.duration"]
        self._rejections = made["resilient.rejections"]
        self._transitions = made["resilient.circuit_breaker.transitions"]
        self._retries = made["resilient.retries"]
        self._give_ups = made["resilient.retry.give_ups"]
        self._fallbacks = made["resilient.fallbacks"]
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            CallFinished: self._finished,
            CallRejected: self._rejected,
            StateChanged: self._changed,
            RetryScheduled: self._retry,
            RetryGaveUp: self._gave_up,
            TimedOut: self._timed_out,
            FallbackUsed: self._fallback,
        }

    def __call__(self, event: Event) -> None:
        """Record one event (events with nothing to record are ignored)."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    # -- span events ------------------------------------------------------------------

    def _span_event(self, name: str, attributes: dict[str, Any]) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes)
            return
        # Nothing is being traced around this event: give it a span of its own.
        with self._tracer.start_as_current_span(name, attributes=attributes) as own:
            own.add_event(name, attributes)

    # -- handlers -----------------------------------------------------------------------

    def _finished(self, e: CallFinished) -> None:
        outcome = "slow" if e.outcome == "success" and e.slow else e.outcome
        attrs = {KIND: e.kind, NAME: e.name}
        self._calls.add(1, {**attrs, "resilient.outcome": outcome})
        self._duration.record(e.duration, attrs)
        # A cancellation is no error (its "error" is CancelledError or Cancelled).
        if e.error is not None and e.outcome != "cancelled":
            self._errors.add(1, {**attrs, ERROR: e.error})

    def _rejected(self, e: CallRejected) -> None:
        attrs = {KIND: e.kind, NAME: e.name}
        self._calls.add(1, {**attrs, "resilient.outcome": "rejected"})
        self._rejections.add(1, {**attrs, "resilient.reason": e.reason})
        self._span_event("resilient.rejected", {**attrs, "resilient.reason": e.reason})

    def _changed(self, e: StateChanged) -> None:
        attrs = {NAME: e.name, "resilient.state.from": e.old, "resilient.state.to": e.new}
        self._transitions.add(1, attrs)
        self._span_event("resilient.circuit_breaker.state_change", {KIND: e.kind, **attrs})

    def _retry(self, e: RetryScheduled) -> None:
        error = e.error or "result"
        self._retries.add(1, {NAME: e.name, ERROR: error})
        self._span_event(
            "resilient.retry",
            {
                KIND: e.kind,
                NAME: e.name,
                "resilient.retry.attempt": e.attempt,
                "resilient.retry.delay": e.delay,
                ERROR: error,
            },
        )

    def _gave_up(self, e: RetryGaveUp) -> None:
        self._give_ups.add(1, {NAME: e.name, "resilient.reason": e.reason})
        attrs: dict[str, Any] = {
            KIND: e.kind,
            NAME: e.name,
            "resilient.retry.attempts": e.attempts,
            "resilient.retry.elapsed": e.elapsed,
            "resilient.reason": e.reason,
        }
        attrs[ERROR] = e.error or "result"  # as on resilient.retry: a result retried
        self._span_event("resilient.retry.give_up", attrs)

    def _timed_out(self, e: TimedOut) -> None:
        attrs = {KIND: e.kind, NAME: e.name}
        self._calls.add(1, {**attrs, "resilient.outcome": "timeout"})
        self._errors.add(1, {**attrs, ERROR: "TimeoutExceeded"})
        self._span_event("resilient.timeout", {**attrs, "resilient.timeout.seconds": e.seconds})

    def _fallback(self, e: FallbackUsed) -> None:
        attrs = {KIND: e.kind, NAME: e.name}
        self._calls.add(1, {**attrs, "resilient.outcome": "fallback"})
        self._fallbacks.add(1, {**attrs, "resilient.strategy": e.strategy})
        event: dict[str, Any] = {**attrs, "resilient.strategy": e.strategy}
        if e.error is not None:
            event[ERROR] = e.error
        self._span_event("resilient.fallback", event)

    # -- observable gauges ----------------------------------------------------------------

    def _gauge(self, key: str) -> Callable[[Any], Iterable[Any]]:
        assert key in GAUGES, key

        def callback(options: Any) -> Iterable[Any]:
            readings = gauge_readings(lambda p: self in p._listeners)[key]
            return [metrics.Observation(value, {NAME: name}) for name, value in readings.items()]

        return callback

    def __repr__(self) -> str:
        return "OpenTelemetryObserver()"
