"""OpenTelemetryObserver: span events on the current span and metrics via the API's meter."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilient import (
    Backoff,
    Bulkhead,
    BulkheadFullError,
    CallFinished,
    CallRejected,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    FallbackUsed,
    Policy,
    Retry,
    RetryGaveUp,
    RetryScheduled,
    StateChanged,
    Timeout,
    TimeoutExceeded,
)
from resilient.observe.otel import INSTRUMENTS, SPAN_EVENTS, OpenTelemetryObserver

pytestmark = pytest.mark.anyio


class Otel:
    """An SDK set up with in-memory exporters, and an observer wired to it."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.observer = OpenTelemetryObserver(self.tracer_provider, self.meter_provider)
        self.tracer = self.tracer_provider.get_tracer("test")

    def finished(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans.get_finished_spans() if s.name == name]
        return span

    def points(self, metric: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """The data points of one metric, keyed by their attributes."""
        data = self.reader.get_metrics_data()
        found: dict[frozenset[tuple[str, Any]], Any] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        for p in m.data.data_points:
                            found[frozenset(p.attributes.items())] = p
        return found


def attrs(**kw: Any) -> frozenset[tuple[str, Any]]:
    keys = {
        "kind": "resilient.policy.kind",
        "name": "resilient.policy.name",
        "outcome": "resilient.outcome",
        "reason": "resilient.reason",
        "strategy": "resilient.strategy",
        "error": "error.type",
    }
    return frozenset((keys.get(k, k), v) for k, v in kw.items())


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


class StubBreaker(Policy):
    """Something shaped like a CircuitBreaker for the observable gauges."""

    kind = "circuit_breaker"

    def __init__(self, name: str, state: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.state = state
        self.metrics = type(
            "M",
            (),
            {
                "failure_rate": 0.5,
                "slow_call_rate": 0.0,
                "calls": 2,
                "failed_calls": 1,
                "slow_calls": 0,
                "not_permitted_calls": 0,
            },
        )()

    async def call(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)


async def test_span_events_go_on_the_current_span(otel: Otel) -> None:
    """Retries, fallbacks, timeouts, rejections, transitions: events of the request's span."""
    obs = [otel.observer]
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 2:
            raise ConnectionError("secret message")
        return "ok"

    async def broken() -> str:
        raise KeyError("k")

    async def slow() -> None:
        await anyio.sleep(5)

    pool = Bulkhead("o-pool", 1, max_wait=0, observers=obs)
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    with otel.tracer.start_as_current_span("request"):
        await Retry("o-net", backoff=Backoff.constant(2.0), observers=obs).call(flaky)
        await Fallback(lambda e: "x", name="o-fb", observers=obs).call(broken)
        with pytest.raises(TimeoutExceeded):
            await Timeout(1.0, name="o-t", observers=obs).call(slow)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.call, hold)
            await anyio.sleep(0.1)
            with pytest.raises(BulkheadFullError):
                await pool.call(hold)
            release.set()
        otel.observer(StateChanged("circuit_breaker", "o-db", "closed", "open"))
    span = otel.finished("request")
    events = {e.name: dict(e.attributes or {}) for e in span.events}
    assert set(events) == set(SPAN_EVENTS) - {"resilient.retry.give_up"}
    assert events["resilient.retry"] == {
        "resilient.policy.kind": "retry",
        "resilient.policy.name": "o-net",
        "resilient.retry.attempt": 1,
        "resilient.retry.delay": 2.0,
        "error.type": "ConnectionError",
    }
    assert events["resilient.fallback"]["resilient.strategy"] == "o-fb"
    assert events["resilient.fallback"]["error.type"] == "KeyError"
    assert events["resilient.timeout"]["resilient.timeout.seconds"] == 1.0
    assert events["resilient.rejected"]["resilient.reason"] == "max_wait"
    assert events["resilient.circuit_breaker.state_change"]["resilient.state.to"] == "open"
    assert "secret" not in repr(span.to_json())


async def test_give_up_event_names_the_reason(otel: Otel) -> None:
    """A retry that gives up adds resilient.retry.give_up with attempts, reason and error type."""

    async def broken() -> None:
        raise ConnectionError

    with otel.tracer.start_as_current_span("request"):
        retry = Retry("o-gu", attempts=2, backoff=Backoff.constant(0), observers=[otel.observer])
        with pytest.raises(ConnectionError):
            await retry.call(broken)
    events = {e.name: dict(e.attributes or {}) for e in otel.finished("request").events}
    assert events["resilient.retry.give_up"]["resilient.retry.attempts"] == 2
    assert events["resilient.retry.give_up"]["resilient.reason"] == "attempts"
    assert events["resilient.retry.give_up"]["error.type"] == "ConnectionError"
    (point,) = otel.points("resilient.retry.give_ups").values()
    assert point.value == 1


async def test_give_up_on_a_result_names_it_as_the_retries_do(otel: Otel) -> None:
    """Giving up on a returned value: error.type is "result", as on resilient.retry."""

    async def empty() -> str:
        return ""

    with otel.tracer.start_as_current_span("request"):
        retry = Retry(
            "o-gr",
            attempts=2,
            backoff=Backoff.constant(0),
            retry_if_result=lambda value: value == "",
            observers=[otel.observer],
        )
        assert await retry.call(empty) == ""
    events = {e.name: dict(e.attributes or {}) for e in otel.finished("request").events}
    assert events["resilient.retry"]["error.type"] == "result"
    assert events["resilient.retry.give_up"]["error.type"] == "result"


def test_an_event_outside_any_span_gets_its_own(otel: Otel) -> None:
    """With no recording span current, the event is recorded on a short span named after it."""
    otel.observer(StateChanged("circuit_breaker", "o-db", "open", "half_open"))
    span = otel.finished("resilient.circuit_breaker.state_change")
    assert [e.name for e in span.events] == ["resilient.circuit_breaker.state_change"]
    assert dict(span.attributes or {})["resilient.state.from"] == "open"


async def test_metrics_count_outcomes_retries_fallbacks_and_durations(otel: Otel) -> None:
    """Counters and the duration histogram carry the same facts as the Prometheus metrics."""
    obs = [otel.observer]

    async def broken() -> str:
        raise ConnectionError

    await Fallback(lambda e: "x", name="m-fb", observers=obs).call(broken)
    retry = Retry("m-net", attempts=3, backoff=Backoff.constant(1), observers=obs)
    with pytest.raises(ConnectionError):
        await retry.call(broken)
    otel.observer(CallFinished("circuit_breaker", "m-db", "success", 2.0, slow=True))
    otel.observer(CallFinished("circuit_breaker", "m-db", "failure", 1.0, error="OSError"))

    calls = otel.points("resilient.calls")
    assert calls[attrs(kind="fallback", name="m-fb", outcome="fallback")].value == 1
    assert calls[attrs(kind="circuit_breaker", name="m-db", outcome="slow")].value == 1
    assert calls[attrs(kind="circuit_breaker", name="m-db", outcome="failure")].value == 1
    retries = otel.points("resilient.retries")
    assert retries[attrs(name="m-net", error="ConnectionError")].value == 2
    fallbacks = otel.points("resilient.fallbacks")
    assert fallbacks[attrs(kind="fallback", name="m-fb", strategy="m-fb")].value == 1
    (duration,) = otel.points("resilient.call.duration").values()
    assert (duration.count, duration.sum) == (2, 3.0)
    errors = otel.points("resilient.call.errors")
    assert errors[attrs(kind="circuit_breaker", name="m-db", error="OSError")].value == 1


async def test_observable_gauges_read_live_policies(otel: Otel) -> None:
    """Breaker state and rates, bulkhead permits: read at collection, for watched policies only."""
    pool = Bulkhead("m-pool", 2, observers=[otel.observer])
    breaker = StubBreaker("m-cb", "half_open", observers=[otel.observer])
    unwatched = Bulkhead("m-unwatched", 9)
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.call, hold)
        await anyio.sleep(0.1)
        active = otel.points("resilient.bulkhead.active")
        release.set()
    assert active[attrs(name="m-pool")].value == 1
    limits = otel.points("resilient.bulkhead.max_concurrent")
    assert {key: p.value for key, p in limits.items()} == {attrs(name="m-pool"): 2}
    assert otel.points("resilient.circuit_breaker.state")[attrs(name="m-cb")].value == 2
    assert otel.points("resilient.circuit_breaker.failure_rate")[attrs(name="m-cb")].value == 0.5
    del breaker, unwatched


def test_every_instrument_is_created(otel: Otel) -> None:
    """Each instrument in INSTRUMENTS exists once something fed it."""
    keep = [StubBreaker("i-cb", "open", observers=[otel.observer])]
    keep.append(Bulkhead("i-pool", 1, observers=[otel.observer]))
    for event in (
        CallFinished("circuit_breaker", "i-cb", "failure", 1.0, error="E"),
        StateChanged("circuit_breaker", "i-cb", "closed", "open"),
        CallRejected("bulkhead", "i-pool", "queue_full"),
        RetryScheduled("retry", "r", 1, 0.0, None),
        RetryGaveUp("retry", "r", 2, 0.0, "attempts", None),
        FallbackUsed("fallback", "f", "f", "E"),
    ):
        otel.observer(event)
    data = otel.reader.get_metrics_data()
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert names == set(INSTRUMENTS)
    del keep


async def test_without_an_sdk_the_observer_is_harmless() -> None:
    """With the API's default (no-op) providers the observer records nothing and raises nothing."""
    observer = OpenTelemetryObserver()

    async def broken() -> str:
        raise ConnectionError

    assert await Fallback(lambda e: "x", observers=[observer]).call(broken) == "x"
    observer(StateChanged("circuit_breaker", "x", "closed", "open"))


def test_missing_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """With opentelemetry-api absent, importing the module says which extra to install."""
    for module in ("opentelemetry", "opentelemetry.trace", "opentelemetry.metrics"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, "resilient.observe.otel")
    with pytest.raises(ImportError, match=re.escape("pip install 'resilient-policies[otel]'")):
        importlib.import_module("resilient.observe.otel")


async def test_a_real_breaker_trip_shows_in_the_trace_and_the_gauges(otel: Otel) -> None:
    """A breaker tripping inside a request adds a state_change and a rejected event; state 1."""
    breaker = CircuitBreaker(
        "o-real", minimum_calls=2, open_duration=5.0, observers=[otel.observer]
    )

    async def down() -> None:
        raise ConnectionError

    with otel.tracer.start_as_current_span("request"):
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breaker.call(down)
        with pytest.raises(CircuitOpenError):
            await breaker.call(down)
    events = [(e.name, dict(e.attributes or {})) for e in otel.finished("request").events]
    assert events == [
        (
            "resilient.circuit_breaker.state_change",
            {
                "resilient.policy.kind": "circuit_breaker",
                "resilient.policy.name": "o-real",
                "resilient.state.from": "closed",
                "resilient.state.to": "open",
            },
        ),
        (
            "resilient.rejected",
            {
                "resilient.policy.kind": "circuit_breaker",
                "resilient.policy.name": "o-real",
                "resilient.reason": "open",
            },
        ),
    ]
    assert otel.points("resilient.circuit_breaker.state")[attrs(name="o-real")].value == 1
    calls = otel.points("resilient.calls")
    assert calls[attrs(kind="circuit_breaker", name="o-real", outcome="failure")].value == 2
    assert calls[attrs(kind="circuit_breaker", name="o-real", outcome="rejected")].value == 1


def test_docs_list_every_instrument_and_span_event() -> None:
    """docs/observability.md names every instrument with its unit, and every span event."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "observability.md").read_text()
    for name, (_, unit, _) in INSTRUMENTS.items():
        assert f"| `{name}` |" in text, name
        assert f"`{unit}`" in text, (name, unit)
    for event in SPAN_EVENTS:
        assert f"| `{event}` |" in text, event
