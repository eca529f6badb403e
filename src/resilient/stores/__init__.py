"""Shared breaker state: several breakers (processes, hosts) acting as one.

``CircuitBreaker(name, store=...)`` shares the breaker's state with every
breaker of the same ``name`` on that store:

- :class:`MemoryStore` (here): the breakers of one process, at once, on any
  anyio backend; for tests, or several breaker objects guarding one
  dependency.
- :class:`~resilient.stores.redis.RedisStore` (``resilient.stores.redis``,
  extra ``redis``): processes and hosts, through Redis; asyncio only.

The rules every store follows are in :mod:`resilient.stores._base`; the
user guide is ``docs/stores.md``.
"""

from __future__ import annotations

from ._base import BreakerLink, BreakerStore, FleetCounts, How, SharedView
from .memory import MemoryStore

__all__ = ["BreakerLink", "BreakerStore", "FleetCounts", "How", "MemoryStore", "SharedView"]
