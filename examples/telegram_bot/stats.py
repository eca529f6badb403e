"""What the bot counts: an observer of its policies plus counters of its own.

:class:`BotStats` is passed as ``observers=`` to every policy the bot builds
(not added globally, so two bots in one process, as in the tests, keep
separate books). The demo's summary table and ``/metrics`` (:mod:`.metrics`) read it.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field

from resilient import (
    CallRejected,
    Event,
    FallbackUsed,
    RetryGaveUp,
    RetryScheduled,
    StateChanged,
    TimedOut,
)

from .models import DecisionState

__all__ = ["BotStats", "Transition"]

log = logging.getLogger("examples.telegram_bot.stats")


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker moved from ``old`` to ``new``."""

    breaker: str
    old: str
    new: str


@dataclass(slots=True)
class BotStats:
    """Counters of one bot (or of several, one after another, as in the demo)."""

    messages_in: int = 0
    replies_out: int = 0
    parts_sent: int = 0
    redelivered: int = 0
    duplicates_skipped: int = 0
    send_failures: int = 0
    levels: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    gave_up: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    resets: Counter[str] = field(default_factory=Counter)
    transitions: list[Transition] = field(default_factory=list)
    # message received -> reply delivered, the last 10,000 (bounded: the bot runs for months)
    handling_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    # Production: the chats' state machine, abuse limits, replicas.
    state_transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    notices: Counter[str] = field(default_factory=Counter)  # too_long, rate_limited, refused
    lock_timeouts: int = 0
    webhook_refused: int = 0
    lock_lost: int = 0

    def on_state(self, old: DecisionState, new: DecisionState) -> None:
        """A chat's decision state changed (``DecisionEngine``'s ``on_transition``)."""
        self.state_transitions[(old.value, new.value)] += 1

    def __call__(self, event: Event) -> None:
        """The observer: count what the policies did."""
        if isinstance(event, RetryScheduled):
            self.retries[event.name] += 1
        elif isinstance(event, RetryGaveUp):
            self.gave_up[event.name] += 1
        elif isinstance(event, StateChanged):
            self.transitions.append(Transition(event.name, event.old, event.new))
            log.warning("breaker %s: %s -> %s", event.name, event.old, event.new)
        elif isinstance(event, CallRejected):
            self.rejections[f"{event.name}:{event.reason}"] += 1
        elif isinstance(event, TimedOut):
            self.timeouts[event.name] += 1
        elif isinstance(event, FallbackUsed):
            log.info(
                "fallback %s answered instead of %s (%s)", event.strategy, event.name, event.error
            )
