"""Fallback and fallback chains: an answer when the call fails.

``Fallback(handler, on=...)`` turns a matching error into the handler's value.
``FallbackChain(*strategies)`` tries the wrapped function, then each
:class:`Strategy` in order, with the call's own arguments; the first success
wins, and when all fail or are skipped it raises ``FallbackChainFailed``, an
``ExceptionGroup`` of every error in order. Cancellation never triggers a
fallback, and an error raised by a handler or a predicate propagates as is.

The call context: a fallback is chosen after the wrapped code has failed, so
there is nothing in a context for that code to read from a fallback. Hence
neither policy opens a context of its own (on the success path a fallback
costs a check and a ``try``); they join the one that is open, opened by the
caller with :func:`~resilient.call_context` or by an enclosing pipeline,
listing themselves in its ``policies`` and recording in its ``fallback``
which handler or strategy answered.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar, final

from ._anyio import deliver_pending_cancel
from ._events import FallbackUsed, Observer
from ._policy import CallContext, Policy, get_context, label_of, writable
from ._validate import ExceptionFilter, check_exception_types, check_name, matches
from .errors import FallbackChainFailed

__all__ = ["Fallback", "FallbackChain", "Strategy"]

P = ParamSpec("P")
T = TypeVar("T")


async def _resolve(value: Any) -> Any:
    """Await ``value`` when a handler returned an awaitable (async handler)."""
    if inspect.isawaitable(value):
        return await value
    return value


@final
class Fallback(Policy):
    """``Fallback(handler, on=(Exception,), name="fallback")``.

    ``handler(exc)`` is called with the error and its value (or awaited value,
    for an async handler) is returned instead. ``on`` selects which errors:
    exception types or a predicate on the exception.
    """

    kind = "fallback"

    def __init__(
        self,
        handler: Callable[[Exception], Any],
        *,
        on: ExceptionFilter | type[Exception] = (Exception,),
        name: str = "fallback",
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(name, observers)
        if not callable(handler):
            raise ValueError(f"Fallback({name!r}): handler must be callable, got {handler!r}")
        self.handler = handler
        self.on = check_exception_types(f"Fallback({name!r})", "on", on)
        self._label = label_of(self)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        ctx = get_context()
        if ctx is not None and self._label not in ctx.policies:
            ctx = writable(ctx)
            ctx.policies += (self._label,)
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not matches(self.on, exc):
                raise
            value: T = await self._fall_back(ctx, exc)
            return value

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate an ``async def`` function; the result keeps its signature."""
        if not callable(fn):
            raise ValueError(f"{self!r} decorates an async callable, got {fn!r}")
        call = self.call
        fall_back = self._fall_back
        label = self._label

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            # call(), written out: a shared helper would cost a coroutine frame per call.
            if self._fault is not None:
                return await call(fn, *args, **kwargs)
            ctx = get_context()
            if ctx is not None and label not in ctx.policies:
                ctx = writable(ctx)
                ctx.policies += (label,)
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                if not matches(self.on, exc):
                    raise
                value: T = await fall_back(ctx, exc)
                return value

        return wrapper

    async def _fall_back(self, ctx: CallContext | None, exc: Exception) -> Any:
        """The handler's answer to ``exc`` (which ``on`` matched), noted in the open context."""
        # A cancellation of the caller requested in the same instant wins over
        # falling back (the error may even be what the call's cleanup raised
        # while being cancelled).
        await deliver_pending_cancel()
        value = await _resolve(self.handler(exc))
        if ctx is not None:
            writable(get_context() or ctx).fallback = self.name
        if self._listeners:
            self._emit(FallbackUsed(self.kind, self.name, self.name, type(exc).__name__))
        return value


@final
class Strategy:
    """One step of a :class:`FallbackChain`.

    ``fn`` is called with the call's own arguments (sync or async).
    ``can_handle``, if given, is a predicate on the last error: the strategy is
    skipped unless it returns true.
    """

    __slots__ = ("can_handle", "fn", "name")

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        can_handle: Callable[[Exception], bool] | None = None,
    ) -> None:
        self.name = check_name("Strategy", name)
        if not callable(fn):
            raise ValueError(f"Strategy({name!r}): fn must be callable, got {fn!r}")
        if can_handle is not None and not callable(can_handle):
            raise ValueError(
                f"Strategy({name!r}): can_handle must be a predicate, got {can_handle!r}"
            )
        self.fn = fn
        self.can_handle = can_handle

    def __repr__(self) -> str:
        return f"Strategy({self.name!r})"


@final
class FallbackChain(Policy):
    """``FallbackChain(*strategies, name="fallback-chain")``: see the module docstring."""

    kind = "fallback_chain"

    def __init__(
        self,
        *strategies: Strategy,
        name: str = "fallback-chain",
        observers: Sequence[Observer] = (),
    ) -> None:
        super().__init__(name, observers)
        if not strategies:
            raise ValueError(f"FallbackChain({name!r}): strategies must not be empty, got ()")
        for s in strategies:
            if not isinstance(s, Strategy):
                raise ValueError(
                    f"FallbackChain({name!r}): strategies must be Strategy objects, got {s!r}"
                )
        seen = [s.name for s in strategies]
        if len(set(seen)) != len(seen):
            raise ValueError(
                f"FallbackChain({name!r}): strategy names must be unique, got {seen!r}"
            )
        self.strategies = strategies
        self._label = label_of(self)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._fault is not None:
            fn = self._fault(fn)
        ctx = get_context()
        if ctx is not None and self._label not in ctx.policies:
            ctx = writable(ctx)
            ctx.policies += (self._label,)
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            errors: list[Exception] = [exc]
        value: T = await self._strategies(ctx, errors, args, kwargs)
        return value

    async def _strategies(
        self,
        ctx: CallContext | None,
        errors: list[Exception],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Each strategy in turn after the call failed with ``errors[0]``; the first answer wins."""
        for strategy in self.strategies:
            last = errors[-1]
            if strategy.can_handle is not None and not strategy.can_handle(last):
                continue
            await deliver_pending_cancel()  # the caller's cancellation wins (see Fallback)
            try:
                value = await _resolve(strategy.fn(*args, **kwargs))
            except Exception as exc:
                errors.append(exc)
                continue
            if ctx is not None:
                writable(get_context() or ctx).fallback = strategy.name
            if self._listeners:
                self._emit(
                    FallbackUsed(self.kind, self.name, strategy.name, type(errors[0]).__name__)
                )
            return value
        ran = len(errors) - 1
        raise FallbackChainFailed(
            f"fallback chain {self.name!r} failed: the call and {ran} of "
            f"{len(self.strategies)} strategies raised (the rest were skipped)",
            errors,
            name=self.name,
        )

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.strategies)
        return f"FallbackChain({names}, name={self.name!r})"
