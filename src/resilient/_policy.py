"""What every policy shares: the ``Policy`` base, decorator use, the call context.

Every policy implements one coroutine method, ``call(fn, *args, **kwargs)``,
that runs ``fn(*args, **kwargs)`` under the policy. Decorating is sugar over
it, and a :class:`~resilient.Pipeline` chains ``call`` methods, so any policy
composes with any other through that one narrow interface.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, ClassVar, ParamSpec, TypeVar

from . import _events
from ._events import Observer
from ._validate import check_name

__all__ = [
    "CallContext",
    "Policy",
    "SharedContext",
    "call_context",
    "current_context",
    "label_of",
    "writable",
]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class CallContext:
    """What the current call has been through so far.

    One context is shared by every policy a call passes through (the outermost
    context-aware policy creates it), so code inside the call can read its
    ``attempt`` and ``deadline``, and a caller that opened the context with
    :func:`call_context` can read afterwards which ``fallback`` answered.
    """

    policies: tuple[str, ...] = ()
    """The policies the call passed through, outermost first, as ``kind:name``."""
    attempt: int = 0
    """The current attempt of the innermost retry, 1-based; 0 outside any retry."""
    deadline: float | None = None
    """The earliest timeout deadline on the loop clock, if any."""
    fallback: str | None = None
    """The fallback (or chain strategy) that answered, if one did."""

    def enter(self, label: str) -> None:
        """Note that the call passes through the policy labelled ``label``."""
        if label not in self.policies:
            self.policies += (label,)


class SharedContext(CallContext):
    """A context that no policy or caller has written to yet: one object for many calls.

    Opening a context per call costs an allocation that most calls never
    need: a retry whose first attempt succeeds, a pipeline of a breaker and a
    bulkhead, only ever *read* theirs. So those set a shared, prebuilt
    context instead (a retry's lists it at attempt 1), and whoever would
    write to it (a later attempt, a timeout's deadline, a fallback's answer,
    or :func:`current_context`, which hands out the context) first replaces
    it with a private copy through :func:`writable`. The copy is set as the
    current context without a token of its own: the policy that set the
    shared one resets the variable when its call ends, copy and all.
    """

    __slots__ = ()


_current: ContextVar[CallContext | None] = ContextVar("resilient_call_context", default=None)

# The variable's methods, bound once, for the hot paths of the other modules.
# There ``_current.get()`` would not be a cheap method call: CPython 3.11
# compiles a method call on a name bound by an import (``from ._policy import
# _current``) as an attribute load, which builds a bound method object on
# every call (about 40 ns each, three times per call of a retry). Calling an
# imported function is a plain call.
get_context = _current.get
set_context = _current.set
reset_context = _current.reset


def writable(ctx: CallContext) -> CallContext:
    """``ctx`` itself, or for a :class:`SharedContext` a private copy, made the current context."""
    if type(ctx) is not SharedContext:
        return ctx
    own = CallContext(ctx.policies, ctx.attempt, ctx.deadline, ctx.fallback)
    _current.set(own)  # undone with the shared one, by the token that set it
    return own


def label_of(policy: Policy) -> str:
    """How the call context lists ``policy``: ``kind:name``.

    Computed, not stored on every policy: the policies that fill in the
    context keep their own copy, the others (a breaker, a bulkhead: often
    thousands of instances) do not pay for one.
    """
    return f"{policy.kind}:{policy.name}"


def enter_context(label: str) -> tuple[CallContext, Token[CallContext | None] | None]:
    """The current context (writable), entered by ``label``; a new one and its token if none."""
    ctx = _current.get()
    if ctx is None:
        ctx = CallContext((label,))
        return ctx, _current.set(ctx)
    if type(ctx) is SharedContext:
        ctx = writable(ctx)
    if label not in ctx.policies:
        ctx.policies += (label,)
    return ctx, None


def current_context() -> CallContext | None:
    """The context of the call running now, or ``None`` outside any policy that tracks it."""
    ctx = _current.get()
    if ctx is None:
        return None
    return writable(ctx)


@contextmanager
def call_context() -> Iterator[CallContext]:
    """Open a context that the policies called inside this block fill in.

    >>> with call_context() as ctx:            # doctest: +SKIP
    ...     answer = await ask("hello")
    >>> ctx.fallback                           # doctest: +SKIP
    'secondary'
    """
    ctx = CallContext()
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


_BASE_SLOTS = ("__weakref__",)


class Policy(abc.ABC):
    """Base of every policy: a ``name``, ``call``, and decorator use.

    Subclasses implement :meth:`call`. ``_listeners`` is the tuple of observers
    of this policy (its own plus the global ones): the hot path checks it once.
    ``_fault`` is set only by the fault-injection registry in tests.

    The base has one slot, ``__weakref__`` (the registry holds policies
    weakly), and no ``__dict__``: a subclass that lists ``__slots__`` (the
    circuit breaker, often thousands of instances) carries no dict, one that
    does not gets its dict as usual. Where ``name``, ``_own_observers``,
    ``_listeners`` and ``_fault`` live is each subclass's choice (its slots,
    its dict, or properties).
    """

    # Not spelled as a literal tuple: a type checker would read one as every
    # attribute a policy may have, and reject the assignments below.
    __slots__ = _BASE_SLOTS

    kind: ClassVar[str] = "policy"

    def __init__(self, name: str, observers: Sequence[Observer] = ()) -> None:
        self.name = check_name(type(self).__name__, name)
        try:
            own = tuple(observers)
        except TypeError:  # one observer passed bare, or None: say so, not "not iterable"
            raise ValueError(
                f"{type(self).__name__}({name!r}): observers must be a sequence of "
                f"callables, got {observers!r}"
            ) from None
        for observer in own:
            if not callable(observer):
                raise ValueError(
                    f"{type(self).__name__}: observers must be callables, got {observer!r}"
                )
        self._own_observers: tuple[Observer, ...] = own
        self._listeners: tuple[Observer, ...] = _events.registry.listeners(own)
        self._fault: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]] | None
        self._fault = None
        _events.registry.policies.add(self)
        hook = _events.registry.on_new_policy
        if hook is not None:
            hook(self)

    @abc.abstractmethod
    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` under this policy."""

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an ``async def`` function; the result keeps its signature."""
        if not callable(fn):
            raise ValueError(f"{self!r} decorates an async callable, got {fn!r}")
        call = self.call

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return wrapper

    def _emit(self, event: _events.Event) -> None:
        _events.emit(self, event)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
