"""The fault registry behind the ``faults`` fixture, and the event log behind ``resilient_events``.

:class:`Faults` injects errors, latency and results into policies chosen by
name, without touching the code that builds them. Registering a fault for a
target arms every live policy of that name, and every one built later while
the registry is open, through the ``_fault`` hook each policy's ``call``
checks: the fault wraps what the policy calls (for a pipeline, the innermost
function), so the policy reacts as if its downstream had failed. Closing the
registry disarms them all and undoes every patch.

A target is a policy's ``name`` (every policy of that name) or
``"kind:name"`` (``"retry:llm"``) when names are shared across kinds. Faults
on one target apply in the order registered, the first outermost.

Outside pytest::

    with Faults() as faults:
        faults.inject("llm-primary", error=ConnectionError, times=3)
        ...
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import pkgutil
import types
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypedDict, TypeVar, Unpack, final, overload

from .._events import Event, add_observer, registry, remove_observer
from .._policy import Policy
from ..chaos import CallSelection, ErrorSpec, InjectFault, InjectLatency, InjectResult, Switch

__all__ = ["EventLog", "Faults", "Schedule", "UnmatchedFaultWarning"]

E = TypeVar("E", bound=Event)
AsyncFn = Callable[..., Awaitable[Any]]

_MISSING: Any = object()


class Schedule(TypedDict, total=False):
    """Which calls a registered fault hits; see :mod:`resilient.chaos`."""

    rate: float | None
    times: int | None
    calls: CallSelection | None
    every: int | None
    when: Callable[..., bool] | None
    enabled: Switch
    seed: int | None


Injector = InjectFault | InjectLatency | InjectResult


class _Target:
    """The faults registered for one target, in order, and the calls through them."""

    __slots__ = ("calls", "faults", "matched")

    def __init__(self) -> None:
        self.faults: list[Injector] = []
        self.calls = 0
        self.matched = False  # a policy (or the patched function) answered to it

    async def _through(self, fn: AsyncFn, /, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await fn(*args, **kwargs)

    def wrap(self, fn: AsyncFn) -> AsyncFn:
        chain = fn
        for fault in reversed(self.faults):
            chain = functools.partial(fault.call, chain)
        return functools.partial(self._through, chain)


class UnmatchedFaultWarning(UserWarning):
    """A fault was registered for a target that no policy answered to while it was active."""


# The kinds a 'kind:name' target may name, for the message about an unmatched one.
_KINDS = (
    "circuit_breaker",
    "bulkhead",
    "retry",
    "timeout",
    "fallback",
    "fallback_chain",
    "pipeline",
)


def _is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` gives an awaitable, as far as can be told without calling it."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn) or asyncio.iscoroutinefunction(fn):  # AsyncMock too
        return True
    if isinstance(fn, type) or inspect.isroutine(fn):  # a class, a sync function or builtin
        return False
    # an instance of a class whose __call__ is async
    return inspect.iscoroutinefunction(inspect.getattr_static(type(fn), "__call__", None))


def _matches(policy: Policy, target: str) -> bool:
    return policy.name == target or f"{policy.kind}:{policy.name}" == target


_active: Faults | None = None


@final
class Faults:
    """A registry of injected faults, active between :meth:`open` and :meth:`close`.

    ``seed=0`` seeds the faults given no ``seed`` of their own: the n-th fault
    registered gets ``seed + n``, so a test replays the same way every run.
    Only one registry is open at a time, and a closed one stays closed (the
    counts remain readable): make a new one to inject again.
    """

    def __init__(self, *, seed: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"Faults: seed must be an int, got {seed!r}")
        self.seed = seed
        self._targets: dict[str, _Target] = {}
        self._armed: weakref.WeakSet[Policy] = weakref.WeakSet()
        self._undo: list[Callable[[], None]] = []
        self._patched: set[str] = set()
        self._made = 0
        self._making = False
        self._open = False
        self._closed = False
        self._previous_hook: Callable[[Policy], None] | None = None

    # -- lifetime -----------------------------------------------------------

    def open(self) -> None:
        """Start arming policies; raises ``RuntimeError`` if a registry is already open."""
        global _active
        if self._open:
            return
        if self._closed:
            raise RuntimeError("Faults: this registry was closed; make a new one")
        if _active is not None:
            raise RuntimeError(
                "Faults: another fault registry is open; use that one (in a test, "
                "the faults fixture) or close it first"
            )
        self._previous_hook = registry.on_new_policy
        registry.on_new_policy = self._on_new_policy
        _active = self
        self._open = True

    def close(self) -> None:
        """Disarm every policy and undo every patch. Counts stay readable.

        Warns (:class:`UnmatchedFaultWarning`) for each target that no policy
        answered to while the registry was open: likely a misspelt name.
        """
        global _active
        if not self._open:
            return
        self._open = False
        self._closed = True
        for policy in list(self._armed):
            policy._fault = None
        self._armed = weakref.WeakSet()
        while self._undo:
            self._undo.pop()()
        if registry.on_new_policy == self._on_new_policy:
            registry.on_new_policy = self._previous_hook
        _active = None
        # A target is matched by name when a policy appears, so a misspelt
        # one can never fail: say so when nothing ever answered to it.
        for target, entry in self._targets.items():
            if not entry.matched:
                warnings.warn(
                    f"faults: no policy named {target!r} existed while the faults were "
                    f"active; a target is a policy's name or 'kind:name' (kinds: "
                    f"{', '.join(_KINDS)})",
                    UnmatchedFaultWarning,
                    stacklevel=2,
                )

    def __enter__(self) -> Faults:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- registering ----------------------------------------------------------

    def inject(self, target: str, *, error: ErrorSpec, **schedule: Unpack[Schedule]) -> InjectFault:
        """Make calls through ``target`` raise ``error`` (a class, instance or factory).

        ``faults.inject("llm-primary", error=RateLimitError, times=3)``: the
        first three calls fail, then calls go through.
        """
        fault = self._add("inject", target, error, _MISSING, _MISSING, schedule)
        assert isinstance(fault, InjectFault)
        return fault

    def latency(
        self, target: str, *, seconds: float, **schedule: Unpack[Schedule]
    ) -> InjectLatency:
        """Make calls through ``target`` wait ``seconds`` (loop clock) before going through."""
        fault = self._add("latency", target, _MISSING, seconds, _MISSING, schedule)
        assert isinstance(fault, InjectLatency)
        return fault

    def result(self, target: str, *, value: object, **schedule: Unpack[Schedule]) -> InjectResult:
        """Make calls through ``target`` return ``value`` without going through."""
        fault = self._add("result", target, _MISSING, _MISSING, value, schedule)
        assert isinstance(fault, InjectResult)
        return fault

    def spy(self, target: str) -> None:
        """Count the calls through ``target`` (see :meth:`calls`) without injecting anything."""
        self._check_open("spy")
        self._check_target("spy", target)
        self._targets.setdefault(target, _Target())
        self._arm_matching(target)

    def patch(
        self,
        path: str,
        *,
        error: ErrorSpec = _MISSING,
        seconds: float = _MISSING,
        value: object = _MISSING,
        **schedule: Unpack[Schedule],
    ) -> Injector:
        """Inject into an async callable that has no policy, by its dotted import path.

        ``faults.patch("app.search.query", error=TimeoutError, every=2)``. Give
        exactly one of ``error=``, ``seconds=`` or ``value=``. Like
        ``unittest.mock.patch``, this replaces the attribute where it is
        defined: code that imported the function by name before keeps the
        original. Undone at :meth:`close`.
        """
        return self._add("patch", path, error, seconds, value, schedule)

    def calls(self, target: str) -> int:
        """Calls that went through ``target`` since its first fault or spy was registered.

        A call rejected by the policy itself (an open breaker, a full bulkhead)
        never reaches its downstream and is not counted; each retry attempt is.
        """
        entry = self._targets.get(target)
        if entry is None:
            raise ValueError(
                f"faults.calls: nothing is registered for target {target!r}; calls are "
                f"counted through a fault or a spy (faults.spy({target!r}))"
            )
        return entry.calls

    # -- internals ------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if not self._open:
            raise RuntimeError(f"faults.{what}: the registry is not open (use it in a with block)")

    @staticmethod
    def _check_target(what: str, target: object) -> None:
        if not isinstance(target, str) or not target:
            raise ValueError(f"faults.{what}: target must be a non-empty str, got {target!r}")

    def _add(
        self,
        what: str,
        target: str,
        error: Any,
        seconds: Any,
        value: Any,
        schedule: Schedule,
    ) -> Injector:
        """Build the injector for one registration, then arm (or patch) its target."""
        self._check_open(what)
        self._check_target(what, target)
        given = [
            name
            for name, v in (("error", error), ("seconds", seconds), ("value", value))
            if v is not _MISSING
        ]
        if len(given) != 1:
            raise ValueError(
                f"faults.{what}: give exactly one of error=, seconds= or value= for "
                f"{target!r}, got {given or 'none'}"
            )
        options: Schedule = {**schedule}
        if options.get("seed") is None:
            options["seed"] = self.seed + self._made
        # Our own injectors are policies too: keep the new-policy hook from
        # arming them, and keep them out of the live-policy set.
        self._making = True
        try:
            fault: Injector
            if error is not _MISSING:
                fault = InjectFault(target, error=error, **options)
            elif seconds is not _MISSING:
                fault = InjectLatency(target, seconds=seconds, **options)
            else:
                fault = InjectResult(target, value=value, **options)
        finally:
            self._making = False
        registry.policies.discard(fault)
        if what == "patch" and target not in self._patched:
            self._install_patch(target)
        self._made += 1
        self._targets.setdefault(target, _Target()).faults.append(fault)
        self._arm_matching(target)
        return fault

    def _arm_matching(self, target: str) -> None:
        for policy in list(registry.policies):
            if _matches(policy, target):
                self._targets[target].matched = True
                self._arm(policy)

    def _arm(self, policy: Policy) -> None:
        if policy not in self._armed:
            policy._fault = functools.partial(self._apply, policy)
            self._armed.add(policy)

    def _apply(self, policy: Policy, fn: AsyncFn) -> AsyncFn:
        """The policy's ``_fault``: wrap ``fn`` in every target the policy matches."""
        for target, entry in reversed(self._targets.items()):
            if _matches(policy, target):
                fn = entry.wrap(fn)
        return fn

    def _on_new_policy(self, policy: Policy) -> None:
        if self._previous_hook is not None:
            self._previous_hook(policy)
        if self._making:
            return
        matching = [entry for target, entry in self._targets.items() if _matches(policy, target)]
        if matching:
            for entry in matching:
                entry.matched = True
            self._arm(policy)

    def _install_patch(self, path: str) -> None:
        parent_path, _, attr = path.rpartition(".")
        if not parent_path or not attr:
            raise ValueError(
                f"faults.patch: path must be a dotted path such as 'package.module.function', "
                f"got {path!r}"
            )
        try:
            parent = pkgutil.resolve_name(parent_path)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(
                f"faults.patch: cannot import {parent_path!r} for {path!r}: {exc}"
            ) from None
        try:
            if isinstance(parent, type | types.ModuleType):
                raw = inspect.getattr_static(parent, attr)
            else:  # an object: patch its (bound) attribute on the instance
                raw = getattr(parent, attr)
        except AttributeError:
            raise ValueError(f"faults.patch: {parent_path!r} has no attribute {attr!r}") from None
        descriptor = type(raw) if isinstance(raw, staticmethod | classmethod) else None
        original = raw.__func__ if descriptor is not None else raw
        if not callable(original):
            raise ValueError(f"faults.patch: {path!r} is not callable, got {original!r}")
        if not _is_async_callable(original):
            # Its sync callers would get a coroutine back instead of a value.
            raise ValueError(
                f"faults.patch: {path!r} is not an async callable (a coroutine function), "
                f"got {original!r}"
            )
        entry = self._targets.setdefault(path, _Target())
        entry.matched = True

        @functools.wraps(original)
        async def patched(*args: Any, **kwargs: Any) -> Any:
            return await entry.wrap(original)(*args, **kwargs)

        replacement: Any = patched if descriptor is None else descriptor(patched)
        owned = attr in getattr(parent, "__dict__", {})
        try:
            setattr(parent, attr, replacement)
        except (AttributeError, TypeError) as exc:
            raise ValueError(f"faults.patch: cannot replace {path!r}: {exc}") from exc

        def undo() -> None:
            if owned:
                setattr(parent, attr, raw)
            else:
                delattr(parent, attr)

        self._undo.append(undo)
        self._patched.add(path)


@final
class EventLog:
    """Every event emitted while it listens, with filters for assertions.

    ``log.count(StateChanged, name="llm-primary", new="open") == 1``;
    ``log.select(FallbackUsed, strategy="secondary")``. Listens globally
    inside a ``with`` block (the ``resilient_events`` fixture does this).
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def __enter__(self) -> EventLog:
        add_observer(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        remove_observer(self)

    @overload
    def select(self, /, **fields: object) -> list[Event]: ...
    @overload
    def select(self, event_type: type[E], /, **fields: object) -> list[E]: ...
    def select(self, event_type: type[Event] = Event, /, **fields: object) -> list[Any]:
        """The events of ``event_type`` (any by default) whose fields equal ``fields``, in order."""
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise ValueError(
                f"EventLog.select: event_type must be an Event class, got {event_type!r}"
            )
        if event_type is not Event:
            known = {f.name for f in dataclasses.fields(event_type)}
            unknown = sorted(set(fields) - known)
            if unknown:
                raise ValueError(
                    f"EventLog.select: {event_type.__name__} has no field {unknown[0]!r} "
                    f"(fields: {', '.join(sorted(known))})"
                )
        return [
            event
            for event in self.events
            if isinstance(event, event_type)
            and all(getattr(event, k, _MISSING) == v for k, v in fields.items())
        ]

    def count(self, event_type: type[Event] = Event, /, **fields: object) -> int:
        """How many events :meth:`select` would return."""
        return len(self.select(event_type, **fields))

    def clear(self) -> None:
        """Forget the events seen so far."""
        self.events.clear()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __repr__(self) -> str:
        return f"EventLog({len(self.events)} events)"
