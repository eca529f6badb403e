"""Analytics: one event per handled message, best effort, in the ``analytics`` bulkhead.

Writing an event never delays a reply: it runs in the background after the
reply is sent, waits at most 1 s for a permit and runs at most 1 s; when the
pool is full or the sink is slow, the event is dropped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from resilient import Policy

__all__ = ["Analytics", "AnalyticsSink", "MemorySink"]

log = logging.getLogger("examples.telegram_bot.analytics")


class AnalyticsSink(Protocol):
    async def write(self, event: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class MemorySink:
    """Keeps the last ``size`` events in memory (stands in for an analytics service)."""

    size: int = 1000
    events: list[dict[str, Any]] = field(default_factory=list)

    async def write(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        del self.events[: -self.size]


class Analytics:
    """Records events through ``policy``; ``spawn`` starts a background task."""

    def __init__(
        self,
        sink: AnalyticsSink,
        policy: Policy,
        spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
    ) -> None:
        self._sink = sink
        self._policy = policy
        self._spawn = spawn
        self.dropped = 0

    def record(self, event: dict[str, Any]) -> None:
        async def write() -> None:
            try:
                await self._policy.call(self._sink.write, event)
            except Exception as exc:
                self.dropped += 1
                log.debug("analytics event dropped: %r", exc)

        self._spawn(write)
