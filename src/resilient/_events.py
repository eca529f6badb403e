"""Typed events and the observer registry.

An observer is any callable taking one :class:`Event`. Observers are attached
globally (:func:`add_observer`) or to one policy (``observers=``). Each live
policy keeps the tuple of everyone listening to it, recomputed whenever the
global set changes, so the hot path checks one attribute: ``if self._listeners``.

An observer that raises is logged and dropped (disabled everywhere), like
trio's instruments: a broken metrics exporter never breaks a call.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from ._policy import Policy

__all__ = [
    "CallFinished",
    "CallRejected",
    "Event",
    "FallbackUsed",
    "Observer",
    "PermitAcquired",
    "PermitReleased",
    "RetryGaveUp",
    "RetryScheduled",
    "StateChanged",
    "TimedOut",
    "add_observer",
    "remove_observer",
]

logger = logging.getLogger("resilient")

Outcome: TypeAlias = Literal["success", "failure", "ignored", "cancelled"]


@dataclass(frozen=True, slots=True)
class Event:
    """Something a policy did. ``kind`` is the policy's kind, ``name`` its name."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class CallFinished(Event):
    """A call through the policy ended.

    ``outcome`` is how the policy classified it; ``error`` the exception's type
    name (never its message, to keep label cardinality bounded).
    """

    outcome: Outcome
    duration: float
    slow: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CallRejected(Event):
    """A call was refused without running: ``reason`` says why.

    Breakers: ``"open"``, ``"forced_open"``, ``"half_open_full"``.
    Bulkheads: ``"queue_full"``, ``"max_wait"``.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    """A circuit breaker moved from ``old`` to ``new`` (state names, lower case)."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """Attempt ``attempt`` failed; the next starts after ``delay`` seconds."""

    attempt: int
    delay: float
    error: str | None


@dataclass(frozen=True, slots=True)
class RetryGaveUp(Event):
    """The retry stopped: ``reason`` is ``"attempts"``, ``"deadline"`` or ``"retry_after"``."""

    attempts: int
    elapsed: float
    reason: str
    error: str | None


@dataclass(frozen=True, slots=True)
class TimedOut(Event):
    """The inner call was cancelled after ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class FallbackUsed(Event):
    """``strategy`` answered instead of the wrapped call (``error``: what it replaced)."""

    strategy: str
    error: str | None


@dataclass(frozen=True, slots=True)
class PermitAcquired(Event):
    """A bulkhead permit was taken after ``waited`` seconds in the queue."""

    waited: float


@dataclass(frozen=True, slots=True)
class PermitReleased(Event):
    """A bulkhead permit was given back."""


Observer: TypeAlias = Callable[[Event], object]


class _PolicySet:
    """Every live policy, weakly held: a set-like view over a list of plain weak references.

    A ``weakref.WeakSet`` costs about 130 bytes per member (a weak reference
    with a callback, plus its slot in a hash table); this costs one plain
    weak reference and one list slot, about 90. Nothing runs when a policy
    dies: its dead reference is dropped by the next sweep, which runs when
    the list has doubled since the last one, so adding stays amortised O(1)
    and the list holds at most about twice the live policies.

    Iterating yields the live policies in creation order, from a copy of the
    list: safe while policies are created or collected, also from another
    thread (a metrics scrape). Adding is one ``list.append``; a sweep holds
    the lock and rewrites only the references it read, so one added
    meanwhile (by another thread, or by a finalizer the sweep set off) is
    kept. Membership and ``discard`` scan the list: they serve tests and the
    fault registry, not calls.
    """

    __slots__ = ("_lock", "_refs", "_sweep_at")

    _FLOOR = 64  # sweep no more often than every this many additions

    def __init__(self) -> None:
        self._refs: list[weakref.ReferenceType[Policy]] = []
        self._sweep_at = self._FLOOR
        self._lock = threading.Lock()  # one sweep at a time

    def add(self, policy: Policy) -> None:
        """Hold ``policy`` weakly (once: a policy adds itself when it is built)."""
        refs = self._refs
        refs.append(weakref.ref(policy))
        # A sweep already running (another thread's, or this one's, further
        # up the stack) is not waited for: a later add sweeps instead.
        if len(refs) >= self._sweep_at and self._lock.acquire(blocking=False):
            try:
                self._keep(None)
            finally:
                self._lock.release()

    def discard(self, policy: Policy) -> None:
        """Forget ``policy`` if it is held."""
        with self._lock:
            self._keep(policy)

    def _keep(self, drop: Policy | None) -> None:
        """Keep the references to live policies other than ``drop`` (lock held)."""
        refs = self._refs
        n = len(refs)  # references appended while this runs lie past n: kept as they are
        refs[:n] = [r for r in refs[:n] if (p := r()) is not None and p is not drop]
        self._sweep_at = max(2 * len(refs), self._FLOOR)

    def __iter__(self) -> Iterator[Policy]:
        for ref in self._refs.copy():
            policy = ref()
            if policy is not None:
                yield policy

    def __contains__(self, policy: object) -> bool:
        return any(ref() is policy for ref in self._refs.copy())

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Registry:
    """Global observers plus every live policy (weakly held)."""

    def __init__(self) -> None:
        self.observers: tuple[Observer, ...] = ()
        self.policies = _PolicySet()
        # Called with each new policy; the fault-injection registry uses it to
        # arm policies created after a fault was registered for their name.
        self.on_new_policy: Callable[[Policy], None] | None = None

    def listeners(self, own: tuple[Observer, ...]) -> tuple[Observer, ...]:
        """A policy's observers, then the global ones it does not have already (each once)."""
        return own + tuple(o for o in self.observers if o not in own)

    def refresh(self) -> None:
        for policy in list(self.policies):
            policy._listeners = self.listeners(policy._own_observers)


registry = _Registry()


def add_observer(observer: Observer) -> None:
    """Attach ``observer`` to every policy, present and future."""
    if not callable(observer):
        raise ValueError(f"add_observer: observer must be callable, got {observer!r}")
    if observer not in registry.observers:
        registry.observers += (observer,)
        registry.refresh()


def remove_observer(observer: Observer) -> None:
    """Detach a global observer; unknown observers are ignored."""
    if observer in registry.observers:
        registry.observers = tuple(o for o in registry.observers if o != observer)
        registry.refresh()


def emit(policy: Policy, event: Event) -> None:
    """Deliver ``event`` to the policy's listeners; drop any listener that raises."""
    for observer in policy._listeners:
        try:
            observer(event)
        except Exception:
            logger.exception("resilient: observer %r raised; it is dropped", observer)
            _drop(observer)


def _drop(observer: Observer) -> None:
    remove_observer(observer)
    for policy in list(registry.policies):
        if observer in policy._own_observers:
            policy._own_observers = tuple(o for o in policy._own_observers if o != observer)
            policy._listeners = registry.listeners(policy._own_observers)
