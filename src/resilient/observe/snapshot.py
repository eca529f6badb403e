"""``resilient.snapshot()``: every live policy's state and figures, and a health score.

A snapshot reads each live policy once, at the moment it is taken, and keeps
plain values only: it never holds a policy alive. Policies are weakly held by
the registry, so a policy nobody refers to any more is gone from the next
snapshot (once the garbage collector has dropped it).

What each kind reports (``state``, ``figures``):

- ``circuit_breaker``: ``state`` is ``"closed"``, ``"open"``, ``"half_open"``,
  ``"forced_open"`` or ``"disabled"``; figures ``failure_rate``,
  ``slow_call_rate`` (0 to 1), ``calls``, ``failed_calls``, ``slow_calls`` (in
  the current window) and ``not_permitted_calls`` (since creation or reset);
  with a shared store also ``store_degraded`` (1 while the breaker works on
  local state because the store is unreachable, else 0).
- ``bulkhead``: ``state`` is ``None``; figures ``active``, ``waiting``,
  ``available`` and ``max_concurrent``.
- every other kind (retry, timeout, fallback, fallback_chain, pipeline): no
  state and no figures; they keep none between calls.

:meth:`Snapshot.health_score` weighs four sub-scores, each in [0, 1] (1 is
healthy, and a sub-score with nothing to judge is 1):

=================  ======  ===========================================================
sub-score          weight  definition
=================  ======  ===========================================================
``breakers``       0.3     mean over breakers of closed/disabled 1, half-open 0.5,
                           open/forced-open 0
``error_rate``     0.3     mean over breakers not disabled of ``ramp(failure_rate, 0.05, 0.5)``
``latency``        0.2     mean over breakers not disabled of ``ramp(slow_call_rate, 0.05, 0.5)``
``bulkheads``      0.2     mean over bulkheads of ``ramp(active / max_concurrent, 0.7, 1.0)``
=================  ======  ===========================================================

``ramp(x, good, bad)`` is 1 at or below ``good``, 0 at or above ``bad``, and
linear in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final

from .._events import registry
from .._time import now_or_none

if TYPE_CHECKING:
    from .._policy import Policy

logger = logging.getLogger("resilient")

__all__ = [
    "BREAKER_FIGURES",
    "BULKHEAD_FIGURES",
    "GAUGES",
    "HEALTH_WEIGHTS",
    "STATE_CODES",
    "STATE_SCORES",
    "PolicySnapshot",
    "Snapshot",
    "gauge_readings",
    "live_policies",
    "read_policy",
    "snapshot",
    "state_name",
]

BREAKER_FIGURES = (
    "failure_rate",
    "slow_call_rate",
    "calls",
    "failed_calls",
    "slow_calls",
    "not_permitted_calls",
)
BULKHEAD_FIGURES = ("active", "waiting", "available", "max_concurrent")

HEALTH_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"breakers": 0.3, "error_rate": 0.3, "latency": 0.2, "bulkheads": 0.2}
)
"""The weight of each sub-score in :meth:`Snapshot.health_score` (they sum to 1)."""

STATE_SCORES: Mapping[str, float] = MappingProxyType(
    {"closed": 1.0, "disabled": 1.0, "half_open": 0.5, "open": 0.0, "forced_open": 0.0}
)
"""A breaker's contribution to the ``breakers`` sub-score, by state."""

# (good, bad) thresholds of each ramp: 1 at or below good, 0 at or above bad.
ERROR_RATE_RAMP = (0.05, 0.5)
SLOW_RATE_RAMP = (0.05, 0.5)
SATURATION_RAMP = (0.7, 1.0)


@final
@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """One policy as it was when the snapshot was taken.

    ``state`` is a breaker's state name (lower case), ``None`` for other kinds;
    ``figures`` its current numbers (see the module docstring), read-only.
    """

    kind: str
    name: str
    state: str | None
    figures: Mapping[str, float]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``kind``, ``name``, ``state``, ``figures``."""
        return {
            "kind": self.kind,
            "name": self.name,
            "state": self.state,
            "figures": dict(self.figures),
        }


@final
@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every live policy at one moment, sorted by kind then name.

    ``taken_at`` is the loop clock's reading in seconds, ``None`` when taken
    outside a running event loop.
    """

    policies: tuple[PolicySnapshot, ...]
    taken_at: float | None = None

    def of_kind(self, kind: str) -> tuple[PolicySnapshot, ...]:
        """The policies of one kind, e.g. ``"circuit_breaker"``."""
        return tuple(p for p in self.policies if p.kind == kind)

    def health_components(self) -> dict[str, float]:
        """The four sub-scores, each in [0, 1], keyed as :data:`HEALTH_WEIGHTS`."""
        breakers = [p for p in self.policies if p.kind == "circuit_breaker"]
        bulkheads = [p for p in self.policies if p.kind == "bulkhead"]
        # A disabled breaker records nothing: its rates are of a window it no
        # longer keeps, so they say nothing of now.
        measuring = [p for p in breakers if p.state != "disabled"]
        return {
            "breakers": _mean(STATE_SCORES.get(p.state or "", 0.0) for p in breakers),
            "error_rate": _mean(
                _ramp(p.figures["failure_rate"], *ERROR_RATE_RAMP) for p in measuring
            ),
            "latency": _mean(
                _ramp(p.figures["slow_call_rate"], *SLOW_RATE_RAMP) for p in measuring
            ),
            "bulkheads": _mean(_ramp(_saturation(p), *SATURATION_RAMP) for p in bulkheads),
        }

    def health_score(self) -> float:
        """The weighted sum of :meth:`health_components`: 1 is healthy, 0 is down."""
        parts = self.health_components()
        score = sum(HEALTH_WEIGHTS[key] * value for key, value in parts.items())
        return min(1.0, max(0.0, score))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for a ``/health`` endpoint): score, sub-scores, policies."""
        return {
            "health_score": self.health_score(),
            "components": self.health_components(),
            "taken_at": self.taken_at,
            "policies": [p.as_dict() for p in self.policies],
        }


def _ramp(x: float, good: float, bad: float) -> float:
    if x <= good:
        return 1.0
    if x >= bad:
        return 0.0
    return (bad - x) / (bad - good)


def _mean(values: Any) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 1.0


def _saturation(p: PolicySnapshot) -> float:
    limit = p.figures["max_concurrent"]
    return p.figures["active"] / limit if limit > 0 else 1.0


def state_name(state: object) -> str:
    """A breaker state as a lower-case name (``CircuitState.HALF_OPEN`` → ``"half_open"``)."""
    name = getattr(state, "name", state)
    return str(name).lower()


def read_policy(policy: Policy) -> PolicySnapshot:
    """Read one policy's state and figures now (by its ``kind``, duck-typed)."""
    kind = policy.kind
    state: str | None = None
    figures: dict[str, float] = {}
    if kind == "circuit_breaker":
        state = state_name(getattr(policy, "state"))  # noqa: B009 (not on Policy)
        metrics = getattr(policy, "metrics")  # noqa: B009
        figures = {key: getattr(metrics, key) for key in BREAKER_FIGURES}
        degraded = getattr(metrics, "store_degraded", None)
        if degraded is not None:  # a breaker with a shared store: 1 while it runs on local state
            figures["store_degraded"] = float(degraded)
    elif kind == "bulkhead":
        figures = {key: getattr(policy, key) for key in BULKHEAD_FIGURES}
    return PolicySnapshot(kind, policy.name, state, MappingProxyType(figures))


def live_policies(select: Callable[[Policy], bool] | None = None) -> list[Policy]:
    """The live policies (optionally those ``select`` accepts), strongly held by the list."""
    # Safe from another thread (a metrics scrape) while the loop creates
    # policies: the registry iterates over a copy of its list.
    found = list(registry.policies)
    if select is not None:
        found = [p for p in found if select(p)]
    return found


STATE_CODES: Mapping[str, int] = MappingProxyType(
    {"closed": 0, "open": 1, "half_open": 2, "forced_open": 3, "disabled": 4}
)
"""A breaker state as a number, for metrics: 0 closed, 1 open, 2 half-open, 3, 4 manual."""

# Breakers sharing a name are reported as the worst of them (worst first).
_SEVERITY = ("open", "forced_open", "half_open", "closed", "disabled")

GAUGES = (
    "circuit_breaker.state",
    "circuit_breaker.failure_rate",
    "circuit_breaker.slow_call_rate",
    "bulkhead.active",
    "bulkhead.waiting",
    "bulkhead.max_concurrent",
)
"""The figures metrics read from live policies at collection time, as ``kind.figure``."""


def gauge_readings(select: Callable[[Policy], bool]) -> dict[str, dict[str, float]]:
    """For each of :data:`GAUGES`, the value per policy name, read now from live policies.

    Names should be unique; if several live breakers share one, the worst state
    and the highest rates are reported; bulkheads sharing a name add up (as
    their event counters do). A policy whose figures cannot be read is logged
    and left out, so one broken policy never breaks a whole scrape.
    """
    breakers: dict[str, list[PolicySnapshot]] = {}
    bulkheads: dict[str, list[PolicySnapshot]] = {}
    for policy in live_policies(select):
        if policy.kind not in ("circuit_breaker", "bulkhead"):
            continue
        try:
            snap = read_policy(policy)
        except Exception:
            logger.exception("resilient: could not read the figures of %r", policy)
            continue
        group = breakers if snap.kind == "circuit_breaker" else bulkheads
        group.setdefault(snap.name, []).append(snap)
    out: dict[str, dict[str, float]] = {key: {} for key in GAUGES}
    for name, same in sorted(breakers.items()):
        worst = min(same, key=lambda s: _SEVERITY.index(s.state or "closed"))
        out["circuit_breaker.state"][name] = STATE_CODES[worst.state or "closed"]
        for figure in ("failure_rate", "slow_call_rate"):
            out[f"circuit_breaker.{figure}"][name] = max(s.figures[figure] for s in same)
    for name, same in sorted(bulkheads.items()):
        for figure in ("active", "waiting", "max_concurrent"):
            out[f"bulkhead.{figure}"][name] = sum(s.figures[figure] for s in same)
    return out


def snapshot() -> Snapshot:
    """Every live policy's kind, name, state and figures now; see :class:`Snapshot`."""
    read = [read_policy(p) for p in live_policies()]
    read.sort(key=lambda p: (p.kind, p.name))
    return Snapshot(tuple(read), now_or_none())
