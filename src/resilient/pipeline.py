"""Pipeline: several policies as one, outermost first.

``Pipeline(a, b, c)`` runs a call as ``a(b(c(fn)))``. Each policy's ``call``
receives the next one's ``call`` (bound with ``functools.partial``, no extra
coroutine frame), so every policy sees the call's own arguments. Pipelines
nest, and a pipeline of one policy behaves as that policy.

The documented order is Fallback → Retry → CircuitBreaker → Bulkhead →
Timeout: the timeout is per attempt, the breaker records every attempt, and
no bulkhead permit is held during a backoff sleep.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, final

from ._policy import (
    CallContext,
    Policy,
    SharedContext,
    get_context,
    label_of,
    reset_context,
    set_context,
    writable,
)
from ._validate import check_name

__all__ = ["Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")


def _join(ctx: CallContext, labels: tuple[str, ...]) -> None:
    """List the pipeline's policies in an open context (copying a shared one first)."""
    missing = tuple(label for label in labels if label not in ctx.policies)
    if missing:
        writable(ctx).policies += missing


@final
class Pipeline(Policy):
    """``Pipeline(*policies, name="pipeline")``, outermost first."""

    kind = "pipeline"

    def __init__(self, *policies: Policy, name: str = "pipeline") -> None:
        super().__init__(check_name("Pipeline", name))
        if not policies:
            raise ValueError(f"Pipeline({name!r}): policies must not be empty, got ()")
        for p in policies:
            if not isinstance(p, Policy):
                raise ValueError(f"Pipeline({name!r}): policies must be policies, got {p!r}")
        self.policies: tuple[Policy, ...] = policies
        self._labels = tuple(self._flatten(self))
        # The context of a call that found none open: shared by the calls
        # until one writes to it (see SharedContext).
        self._shared = SharedContext(self._labels)

    @staticmethod
    def _flatten(policy: Policy) -> list[str]:
        if isinstance(policy, Pipeline):
            return [label for p in policy.policies for label in Pipeline._flatten(p)]
        return [label_of(policy)]

    def _bind(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if self._fault is not None:
            fn = self._fault(fn)
        chain = fn
        for policy in reversed(self.policies):
            chain = functools.partial(policy.call, chain)
        return chain

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(self._bind(fn), args, kwargs)

    async def _run(
        self, chain: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        ctx = get_context()
        if ctx is not None:
            _join(ctx, self._labels)
            return await chain(*args, **kwargs)
        token = set_context(self._shared)
        try:
            return await chain(*args, **kwargs)
        finally:
            reset_context(token)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate; the chain of bound ``call`` methods is built once, here."""
        if not callable(fn):
            raise ValueError(f"{self!r} decorates an async callable, got {fn!r}")
        run = self._run
        bind = self._bind
        chain = bind(fn)

        labels = self._labels
        shared = self._shared

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            # A fault armed after decoration must still apply: rebind then.
            if self._fault is not None:
                return await run(bind(fn), args, kwargs)
            # _run, written out: a shared helper would cost a coroutine frame per call.
            ctx = get_context()
            if ctx is not None:
                _join(ctx, labels)
                result: T = await chain(*args, **kwargs)
                return result
            token = set_context(shared)
            try:
                result = await chain(*args, **kwargs)
                return result
            finally:
                reset_context(token)

        return wrapper

    def __repr__(self) -> str:
        inner = " → ".join(repr(p) for p in self.policies)
        return f"Pipeline({inner}, name={self.name!r})"
