"""What the bot counts: an observer of its policies plus counters of its own.

:class:`BotStats` is passed as ``observers=`` to every policy the bot builds
(not added globally, so two bots in one process, as in the tests, keep
separate books). The demo's summary table and ``/metrics`` read it.
"""

from __future__ import annotations

import logging
from collections import Counter
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
    handling_seconds: list[float] = field(default_factory=list)

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

    def prometheus_text(self) -> str:
        """The counters in Prometheus' text format (for ``/metrics``)."""
        lines = [
            "# TYPE bot_messages_in_total counter",
            f"bot_messages_in_total {self.messages_in}",
            "# TYPE bot_replies_out_total counter",
            f"bot_replies_out_total {self.replies_out}",
            "# TYPE bot_parts_sent_total counter",
            f"bot_parts_sent_total {self.parts_sent}",
            "# TYPE bot_send_failures_total counter",
            f"bot_send_failures_total {self.send_failures}",
            "# TYPE bot_answers_total counter",
        ]
        lines += [f'bot_answers_total{{level="{k}"}} {v}' for k, v in sorted(self.levels.items())]
        lines.append("# TYPE bot_retries_total counter")
        lines += [f'bot_retries_total{{policy="{k}"}} {v}' for k, v in sorted(self.retries.items())]
        lines.append("# TYPE bot_breaker_transitions_total counter")
        counted = Counter(f'breaker="{t.breaker}",to="{t.new}"' for t in self.transitions)
        lines += [f"bot_breaker_transitions_total{{{k}}} {v}" for k, v in sorted(counted.items())]
        lines.append("# TYPE bot_state_resets_total counter")
        lines += [
            f'bot_state_resets_total{{reason="{k}"}} {v}' for k, v in sorted(self.resets.items())
        ]
        return "\n".join(lines) + "\n"
