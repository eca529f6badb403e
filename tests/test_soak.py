"""The chaos soak (``benchmarks/soak.py``) holds every invariant, on both backends.

The quick soak (50,000 calls, 1,000 tasks) runs here without tracemalloc,
which slows a run down 3.5 (asyncio) to 6 (trio) times; memory is checked
by a second, smaller soak under tracemalloc, with another seed and no
observer on the breaker (so its fast paths run): 25,000 calls on asyncio,
12,500 on trio (about 800 calls a second when traced). Two sabotaged runs
show that the checks bite: lost events break the reconciliation, and calls
that leak break the memory check.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_soak() -> ModuleType:
    """benchmarks/soak.py by its path: it needs neither the benchmarks package nor its extras."""
    name = "resilient_benchmarks_soak"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "soak.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


soak = _load_soak()
BACKENDS = ["asyncio", "trio"]


def assert_holds(report: Any) -> None:
    """No violation, and the soak really went through every phase and outcome."""
    assert report.violations == [], "\n".join(report.violations)
    assert sum(report.outcomes.values()) == report.config.calls
    polled = not report.config.observe_breaker
    # A call ends timed out when its last attempt stalls too: a few in 10,000.
    rare = ("unexpected",) if report.config.calls >= 50_000 else ("unexpected", "timed_out")
    for outcome in soak.OUTCOMES:
        if outcome not in rare:
            assert report.outcomes[outcome] > 0, f"no call ended as {outcome}"
    assert set(report.fallback_for) == {"open", "bulkhead", "timeout", "failed"}
    observed = () if polled else ("open", "half_open_full")  # the breaker's own events
    for reason in (*observed, "queue_full", "max_wait"):
        assert report.rejections[reason] > 0, f"no rejection for {reason}"
    for where in ("backoff", "queue", "permit"):
        assert report.cancelled_in[where] > 0, f"no cancellation landed in the {where}"
    assert len(report.phase_starts) == len(soak.PHASES)
    assert report.transitions["closed->open"] == 1
    assert report.transitions["half_open->closed"] == 1
    if not polled:  # polling misses the short half-open periods of the outage
        assert report.transitions["open->half_open"] >= 3
    assert report.trials_peak == report.config.half_open_max_calls
    assert report.bulkhead_peak == report.config.max_concurrent


@pytest.mark.parametrize("backend", BACKENDS)
def test_quick_soak_holds_every_invariant(backend: str) -> None:
    """50,000 calls through the pipeline: every call accounted once, every count reconciled."""
    config = soak.Config(calls=soak.QUICK_CALLS, trace_memory=False)
    report = soak.run_soak(config, backend)
    assert_holds(report)
    print(soak.format_reports([report]))


@pytest.mark.parametrize(("backend", "calls"), [("asyncio", 25_000), ("trio", 12_500)])
def test_soak_memory_stays_flat(backend: str, calls: int) -> None:
    """Traced memory stays flat, and an unobserved breaker (fast paths) holds every invariant."""
    config = soak.Config(calls=calls, seed=1, observe_breaker=False)
    report = soak.run_soak(config, backend)
    assert_holds(report)
    assert 0 < report.memory_first <= report.memory_peak
    print(soak.format_reports([report]))


def test_lost_events_break_the_reconciliation(monkeypatch: pytest.MonkeyPatch) -> None:
    """An observer missing one breaker rejection in a hundred is caught by the ledger."""
    counted = soak.Tally.__call__
    seen = [0]

    def lossy(self: Any, event: Any) -> None:
        if type(event) is soak.CallRejected and event.kind == "circuit_breaker":
            seen[0] += 1
            if seen[0] % 100 == 0:
                return
        counted(self, event)

    monkeypatch.setattr(soak.Tally, "__call__", lossy)
    report = soak.run_soak(soak.Config(calls=5_000, trace_memory=False), "asyncio")
    assert seen[0] >= 100
    assert report.violation_counts.get("reconcile", 0) >= 1
    assert any("breaker rejections" in message for message in report.violations)


def test_a_leak_breaks_the_memory_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls that each keep 1,000 bytes are caught by the memory check."""
    build = soak.Soak.__init__
    kept: list[bytes] = []

    def leaky_soak(self: Any, config: Any, backend: str) -> None:
        build(self, config, backend)
        call = self.call

        async def leaky(i: int) -> Any:
            kept.append(bytes(1_000))
            return await call(i)

        self.call = leaky

    monkeypatch.setattr(soak.Soak, "__init__", leaky_soak)
    # Short open durations, so that so short a run still sees the breaker close.
    config = soak.Config(calls=6_000, memory_samples=4, open_duration_max=0.1)
    report = soak.run_soak(config, "asyncio")
    assert len(kept) == config.calls
    assert report.violation_counts == {"memory": 1}, report.violations
    # What the check saw is the leak: about 2,800 calls between the two windows.
    assert report.memory_last - report.memory_first > 1_000 * 2_500
