"""What observing costs: each policy's success path with and without observers.

Run it with ``python benchmarks/bench_observe.py`` (``--quick`` for a smoke
run). Needs the ``prometheus`` and ``otel`` extras and the OpenTelemetry SDK
(all in ``dev``).

For every policy (Retry, Timeout, Fallback, FallbackChain, CircuitBreaker,
Bulkhead, and a Pipeline of all five in the documented order), four cases
in the same run, with the shared harness (``_harness.py``: warm-up, shuffled
rounds, median and IQR, ratio to a bare await):

- **no observer**: the policy as it ships; its hot path checks
  ``if self._listeners:`` and finds nothing;
- **no-op observer**: ``observers=[lambda event: None]``: the price of
  building and delivering the events themselves;
- **Prometheus**: ``PrometheusObserver`` on a private registry;
- **OpenTelemetry**: ``OpenTelemetryObserver`` with the SDK's providers, an
  in-memory metric reader and a span processor with an in-memory exporter.

Every call succeeds, so this is the success path: the breaker emits
``CallFinished``, the bulkhead ``PermitAcquired``/``PermitReleased``; retry,
timeout and fallbacks emit nothing on success (so with an observer they cost
what they cost without). The last table sums the figures up: overhead over a
bare await per policy and observer, and what the observer adds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from _harness import Case, Result, parse_args, print_table, run_cases, target
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from resilient import (
    Bulkhead,
    CircuitBreaker,
    Fallback,
    FallbackChain,
    Observer,
    Pipeline,
    Policy,
    Retry,
    Strategy,
    Timeout,
)
from resilient.observe.otel import OpenTelemetryObserver
from resilient.observe.prometheus import PrometheusObserver

Call = Callable[[], Awaitable[Any]]


def _noop(event: object) -> None:
    return None


def observers() -> dict[str, Sequence[Observer]]:
    """The observer set of each column, built once (one Prometheus registry, one SDK)."""
    spans = TracerProvider()
    spans.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {
        "no observer": [],
        "no-op observer": [_noop],
        "Prometheus": [PrometheusObserver(CollectorRegistry())],
        "OpenTelemetry": [OpenTelemetryObserver(spans, meters)],
    }


def policies(obs: Sequence[Observer]) -> dict[str, Policy]:
    """One fresh policy of each kind with the given observers (names as in a service)."""
    return {
        "Retry": Retry("bench", observers=obs),
        "Timeout": Timeout(30.0, name="bench", observers=obs),
        "Fallback": Fallback(lambda exc: 0, name="bench", observers=obs),
        "FallbackChain": FallbackChain(Strategy("s", lambda: 0), name="bench", observers=obs),
        "CircuitBreaker": CircuitBreaker("bench", observers=obs),
        "Bulkhead": Bulkhead("bench", 100, observers=obs),
        "Pipeline": Pipeline(
            Fallback(lambda exc: 0, name="bench", observers=obs),
            Retry("bench", observers=obs),
            CircuitBreaker("bench", observers=obs),
            Bulkhead("bench", 100, observers=obs),
            Timeout(30.0, name="bench", observers=obs),
        ),
    }


POLICIES = (
    "Retry",
    "Timeout",
    "Fallback",
    "FallbackChain",
    "CircuitBreaker",
    "Bulkhead",
    "Pipeline",
)


def cases() -> list[Case]:
    out = []
    for column, obs in observers().items():
        for policy in POLICIES:

            async def setup(policy: str = policy, obs: Sequence[Observer] = obs) -> Call:
                # Decorated, as users write it: the wrapper keeps the signature.
                return policies(obs)[policy](target)

            out.append(Case(f"{policy} | {column}", setup))
    return out


def summary(results: list[Result]) -> None:
    """Per policy: overhead over a bare await in each column, and what each observer adds."""
    by_name = {r.name: r for r in results}
    columns = list(observers())
    print("\noverhead per call over a bare await (µs), median; (+x): what the observer adds")
    header = f"{'policy':<15}" + "".join(f"{c:>24}" for c in columns)
    print(header)
    print("-" * len(header))
    for policy in POLICIES:
        base = by_name[f"{policy} | no observer"].overhead
        cells = []
        for column in columns:
            over = by_name[f"{policy} | {column}"].overhead
            extra = "" if column == "no observer" else f" ({(over - base) * 1e6:+.3f})"
            cells.append(f"{over * 1e6:.3f}{extra}")
        print(f"{policy:<15}" + "".join(f"{c:>24}" for c in cells))


def main() -> None:
    args = parse_args(__doc__ or "")
    results = run_cases(cases(), n=args.n, repeats=args.repeats, warmup=args.warmup)
    print_table("success path, per call (asyncio)", results)
    summary(results)


if __name__ == "__main__":
    main()
