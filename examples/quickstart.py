"""Quickstart: a flaky async function made reliable by a pipeline.

Run it with ``python examples/quickstart.py``. It calls a pretend weather
service that times out, fails and recovers, through

    Fallback → Retry → Timeout

and prints what each policy did, from the events they emit.
"""

from __future__ import annotations

import random

import anyio

import resilient
from resilient import (
    Backoff,
    Event,
    Fallback,
    FallbackUsed,
    Pipeline,
    Retry,
    RetryGaveUp,
    RetryScheduled,
    TimedOut,
    Timeout,
    call_context,
)

rng = random.Random(7)  # seeded: the same story every run


async def weather(city: str) -> str:
    """A pretend remote call: sometimes slow, sometimes failing."""
    roll = rng.random()
    if roll < 0.15:
        await anyio.sleep(1.0)  # hangs past the timeout
    elif roll < 0.4:
        raise ConnectionError("connection reset by peer")
    return f"{city}: 21°C, sunny"


def describe(event: Event) -> None:
    if isinstance(event, RetryScheduled):
        print(f"    retry: attempt {event.attempt} failed ({event.error}); "
              f"next in {event.delay * 1000:.0f} ms")  # fmt: skip
    elif isinstance(event, TimedOut):
        print(f"    timeout: no answer within {event.seconds}s, cancelled")
    elif isinstance(event, RetryGaveUp):
        print(f"    retry: gave up after {event.attempts} attempts ({event.reason})")
    elif isinstance(event, FallbackUsed):
        print(f"    fallback: answered instead ({event.error})")


ask_weather = Pipeline(
    Fallback(lambda exc: "weather unavailable, try again later"),
    Retry("weather", attempts=4, backoff=Backoff.exponential(0.05, maximum=0.2)),
    Timeout(0.2, name="weather-timeout"),
    name="weather",
)(weather)


async def main() -> None:
    resilient.add_observer(describe)
    try:
        for city in ["Paris", "Berlin", "Lisbon", "Oslo", "Rome", "Vienna"]:
            print(f"{city}:")
            with call_context() as ctx:
                answer = await ask_weather(city)
            how = f"fallback {ctx.fallback!r}" if ctx.fallback else f"attempt {ctx.attempt}"
            print(f"  -> {answer}  [{how}]")
    finally:
        resilient.remove_observer(describe)


if __name__ == "__main__":
    anyio.run(main)
