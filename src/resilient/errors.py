"""The exception tree of ``resilient``.

Every error a policy raises on its own account derives from one root::

    ResilienceError
    ├── CircuitOpenError      a breaker rejected the call (.name, .retry_after)
    ├── BulkheadFullError     a bulkhead had no room (.name, .reason)
    ├── TimeoutExceeded       the call ran past its limit (.seconds); also a TimeoutError
    └── FallbackChainFailed   every strategy failed; an ExceptionGroup of their errors

Errors raised by the user's own code pass through unchanged. Cancellation is
never caught, counted or wrapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "FallbackChainFailed",
    "ResilienceError",
    "TimeoutExceeded",
]


class ResilienceError(Exception):
    """Root of every error raised by a policy itself."""


class CircuitOpenError(ResilienceError):
    """A circuit breaker rejected the call without running it.

    ``retry_after`` is the number of seconds until a trial call may be admitted,
    or ``None`` when unknown (forced open, or half-open with every trial taken).

    The error's ``args`` are ``(name, retry_after)`` and its message is
    formatted from them when read (``str(error)``): an open breaker builds one
    per rejected call, most are counted and never printed, and formatting
    ``retry_after`` would cost more than the rest of a rejection. So the hot
    path builds one without running any Python code (see ``breaker.py``).
    """

    def __init__(self, name: str, retry_after: float | None) -> None:
        super().__init__(name, retry_after)

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def retry_after(self) -> float | None:
        """Seconds until a trial call may be admitted; ``None`` when unknown."""
        return self.args[1]  # type: ignore[no-any-return]

    def __str__(self) -> str:
        name, retry_after = self.args
        if retry_after is None:
            detail = "no trial call is possible now"
        else:
            detail = f"a trial call is possible in {retry_after:.3f}s"
        return f"circuit {name!r} is open: {detail}"


BulkheadReason = Literal["queue_full", "max_wait"]


class BulkheadFullError(ResilienceError):
    """A bulkhead had no free permit: its queue was full, or the wait ran out."""

    def __init__(self, name: str, reason: BulkheadReason, detail: str = "") -> None:
        self.name = name
        self.reason: BulkheadReason = reason
        if not detail:
            detail = "its queue is full" if reason == "queue_full" else "the wait ran out"
        super().__init__(f"bulkhead {name!r} is full: {detail}")

    def __reduce__(self) -> tuple[type[BulkheadFullError], tuple[str, BulkheadReason, str]]:
        return type(self), (self.name, self.reason, "")


class TimeoutExceeded(ResilienceError, TimeoutError):
    """The call ran longer than ``seconds`` and was cancelled."""

    def __init__(self, seconds: float, name: str = "timeout") -> None:
        self.seconds = seconds
        self.name = name
        super().__init__(f"{name!r} timed out after {seconds:g}s")

    def __reduce__(self) -> tuple[type[TimeoutExceeded], tuple[float, str]]:
        return type(self), (self.seconds, self.name)


class FallbackChainFailed(ExceptionGroup[Exception], ResilienceError):
    """Every step of a fallback chain failed or was skipped.

    The group holds each error in order: the wrapped function's first, then one
    per strategy that ran.
    """

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], *, name: str = "fallback-chain"
    ) -> FallbackChainFailed:
        self = super().__new__(cls, message, exceptions)
        self.name = name
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], *, name: str = "fallback-chain"
    ) -> None:
        super().__init__(message, exceptions)
        self.name = name

    def derive(self, excs: Sequence[Exception]) -> FallbackChainFailed:  # type: ignore[override]
        return FallbackChainFailed(self.message, excs, name=self.name)
