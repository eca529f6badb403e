"""resilient: typed, anyio-based resilience policies for async Python.

Circuit breaker, bulkhead, retry, timeout, fallback and fallback chain, each a
decorator for ``async def`` functions and composable into a :class:`Pipeline`.
"""

from ._events import (
    CallFinished,
    CallRejected,
    Event,
    FallbackUsed,
    Observer,
    PermitAcquired,
    PermitReleased,
    RetryGaveUp,
    RetryScheduled,
    StateChanged,
    TimedOut,
    add_observer,
    remove_observer,
)
from ._policy import CallContext, Policy, call_context, current_context
from ._window import CountWindow, TimeWindow
from .breaker import CircuitBreaker, CircuitState
from .bulkhead import Bulkhead
from .errors import (
    BulkheadFullError,
    CircuitOpenError,
    FallbackChainFailed,
    ResilienceError,
    TimeoutExceeded,
)
from .fallback import Fallback, FallbackChain, Strategy
from .observe.snapshot import PolicySnapshot, Snapshot, snapshot
from .pipeline import Pipeline
from .retry import Backoff, Jitter, Retry
from .timeout import Timeout

__all__ = [
    "Backoff",
    "Bulkhead",
    "BulkheadFullError",
    "CallContext",
    "CallFinished",
    "CallRejected",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "CountWindow",
    "Event",
    "Fallback",
    "FallbackChain",
    "FallbackChainFailed",
    "FallbackUsed",
    "Jitter",
    "Observer",
    "PermitAcquired",
    "PermitReleased",
    "Pipeline",
    "Policy",
    "PolicySnapshot",
    "ResilienceError",
    "Retry",
    "RetryGaveUp",
    "RetryScheduled",
    "Snapshot",
    "StateChanged",
    "Strategy",
    "TimeWindow",
    "TimedOut",
    "Timeout",
    "TimeoutExceeded",
    "add_observer",
    "call_context",
    "current_context",
    "remove_observer",
    "snapshot",
]

__version__ = "0.1.0"
