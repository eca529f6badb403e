"""Validation at the edge: every error names the argument and the bad value."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "check_exception_types",
    "check_int",
    "check_name",
    "check_seconds",
    "check_unit_interval",
]


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_name(owner: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{owner}: name must be a non-empty str, got {value!r}")
    return value


def check_int(owner: str, arg: str, value: object, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{owner}: {arg} must be an int >= {minimum}, got {value!r}")
    return value


def check_seconds(
    owner: str,
    arg: str,
    value: object,
    *,
    allow_zero: bool = False,
    allow_inf: bool = False,
) -> float:
    """A finite (unless ``allow_inf``) number of seconds, > 0 (or >= 0)."""
    ok = _is_real(value) and not math.isnan(value)  # type: ignore[arg-type]
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v >= 0 if allow_zero else v > 0) and (allow_inf or math.isfinite(v))
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        kind = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{owner}: {arg} must be {kind} of seconds {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_unit_interval(owner: str, arg: str, value: object) -> float:
    """A rate threshold in (0, 1]."""
    if not _is_real(value) or not (0.0 < float(value) <= 1.0):  # type: ignore[arg-type]
        raise ValueError(f"{owner}: {arg} must be a number in (0, 1], got {value!r}")
    return float(value)  # type: ignore[arg-type]


ExceptionFilter = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def check_exception_types(owner: str, arg: str, value: Any) -> ExceptionFilter:
    """Exception classes (one or a tuple of ``Exception`` subclasses), or a predicate.

    ``BaseException``-only classes (cancellation, ``KeyboardInterrupt``) are
    refused: cancellation is never classified.
    """
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, tuple):
        for item in value:
            if not (isinstance(item, type) and issubclass(item, Exception)):
                raise ValueError(
                    f"{owner}: {arg} must hold Exception subclasses or be a predicate, "
                    f"got {item!r} in {value!r}"
                )
        return value
    if callable(value):
        return value  # type: ignore[no-any-return]
    raise ValueError(
        f"{owner}: {arg} must be exception types or a predicate on the exception, got {value!r}"
    )


def matches(filter_: ExceptionFilter, exc: BaseException) -> bool:
    """Whether ``exc`` is selected by a tuple of types or a predicate."""
    if isinstance(filter_, tuple):
        return isinstance(exc, filter_)
    return bool(filter_(exc))
