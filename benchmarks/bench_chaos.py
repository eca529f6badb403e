"""What fault injection costs a policy call when no fault is registered for it.

Run it with ``python benchmarks/bench_chaos.py`` (``--quick`` for a smoke run).

Every policy's ``call`` starts with ``if self._fault is not None``; the fault
registry behind the pytest plugin's ``faults`` fixture sets ``_fault`` only on
the policies a fault targets. So a policy nobody targets should cost the same
whether a registry is open or not. One harness run (``_harness.py``: warm-up,
shuffled rounds, median and IQR, ratio to a bare await) times, for a retry, a
circuit breaker and a function decorated with a pipeline of both:

- **no registry**: the policy was built before any registry opened;
- **registry open**: built while a registry is open, with a fault armed on
  another policy (the new-policy hook ran for it);
- **armed, never fires**: a fault targets it but is switched off
  (``enabled=False``), for contrast: the cost once a fault is registered.

The first two should match within the noise: that difference is the price of
the plugin for code it does not touch. The check itself is also timed alone
(``timeit``: the loop with the check minus the same loop without it), since
a few nanoseconds are below the noise of a whole call.
"""

from __future__ import annotations

import functools
import timeit
from collections.abc import Awaitable, Callable
from typing import Any

from _harness import Case, parse_args, print_table, run_cases, target

from resilient import Backoff, CircuitBreaker, Pipeline, Policy, Retry
from resilient.testing.faults import Faults

Call = Callable[[], Awaitable[Any]]


def retry(name: str) -> Retry:
    return Retry(name, attempts=3, backoff=Backoff.constant(0.0))


def breaker(name: str) -> CircuitBreaker:
    return CircuitBreaker(name)


def pipeline(name: str) -> Call:
    return Pipeline(retry(f"{name}-retry"), breaker(f"{name}-breaker"), name=name)(target)


def as_call(policy: Policy | Call) -> Call:
    if isinstance(policy, Policy):
        return functools.partial(policy.call, target)
    return policy


def _setup(call: Call) -> Callable[[], Awaitable[Call]]:
    async def setup() -> Call:
        return call

    return setup


def time_the_check(n: int) -> float:
    """Seconds per ``if policy._fault is not None`` on an unarmed policy (best of 7)."""
    policy = retry("check")
    with_check = "for _ in loop:\n    if policy._fault is not None:\n        pass"
    without = "for _ in loop:\n    pass"
    env = {"policy": policy, "loop": range(n)}
    best = min(timeit.repeat(with_check, number=1, repeat=7, globals=env))
    base = min(timeit.repeat(without, number=1, repeat=7, globals=env))
    return (best - base) / n


def main() -> None:
    args = parse_args(__doc__ or "")
    kinds: dict[str, Callable[[str], Policy | Call]] = {
        "Retry.call": retry,
        "CircuitBreaker.call": breaker,
        "@Pipeline(Retry, CircuitBreaker)": pipeline,
    }
    # Built before any registry exists.
    before = {label: as_call(make(f"plain-{i}")) for i, (label, make) in enumerate(kinds.items())}
    registry = Faults()
    registry.open()
    try:
        registry.inject("elsewhere", error=ConnectionError)
        Retry("elsewhere")  # a live, armed policy that is not timed
        during = {
            label: as_call(make(f"open-{i}")) for i, (label, make) in enumerate(kinds.items())
        }
        armed = {}
        for i, (label, make) in enumerate(kinds.items()):
            name = f"armed-{i}"
            registry.inject(name, error=ConnectionError, enabled=False)
            armed[label] = as_call(make(name))
        cases = []
        for label in kinds:
            cases += [
                Case(f"{label}: no registry", _setup(before[label])),
                Case(f"{label}: registry open", _setup(during[label])),
                Case(f"{label}: armed, never fires", _setup(armed[label])),
            ]
        results = run_cases(cases, n=args.n, repeats=args.repeats, warmup=args.warmup)
    finally:
        registry.close()
    print_table("Fault injection: cost per call with no fault registered", results)
    by_name = {r.name: r for r in results}
    print("\nregistry open minus no registry (median per call):")
    for label in kinds:
        delta = by_name[f"{label}: registry open"].median - by_name[f"{label}: no registry"].median
        print(f"  {label:<34} {delta * 1e9:+7.1f} ns")
    check = time_the_check(max(args.n, 100_000) * 10)
    print(f"\nthe check alone (if policy._fault is not None): {check * 1e9:.1f} ns")


if __name__ == "__main__":
    main()
