"""The public API is deliberate: ``__all__`` matches the public names, errors form one tree."""

from __future__ import annotations

import inspect
import pickle
import typing

import pytest

import resilient
from resilient import (
    BulkheadFullError,
    CircuitOpenError,
    FallbackChainFailed,
    ResilienceError,
    TimeoutExceeded,
)


def test_all_matches_public_names() -> None:
    """Everything public in the package is in ``__all__`` and every ``__all__`` name exists."""
    public = {
        name
        for name in vars(resilient)
        if not name.startswith("_")
        and not isinstance(getattr(resilient, name), type(resilient))  # submodules
        and name not in {"annotations"}
    }
    assert public == set(resilient.__all__)
    assert list(resilient.__all__) == sorted(resilient.__all__)


def test_error_tree() -> None:
    """Every policy error derives from ResilienceError; TimeoutExceeded is a TimeoutError."""
    for cls in (CircuitOpenError, BulkheadFullError, TimeoutExceeded, FallbackChainFailed):
        assert issubclass(cls, ResilienceError)
    assert issubclass(TimeoutExceeded, TimeoutError)
    assert issubclass(FallbackChainFailed, ExceptionGroup)


def test_errors_carry_their_facts_and_pickle() -> None:
    """Errors keep name, retry_after, reason and seconds, also through pickle."""
    e1 = pickle.loads(pickle.dumps(CircuitOpenError("llm", 2.5)))
    assert (e1.name, e1.retry_after) == ("llm", 2.5)
    assert "llm" in str(e1)
    e2 = pickle.loads(pickle.dumps(BulkheadFullError("core", "queue_full")))
    assert (e2.name, e2.reason) == ("core", "queue_full")
    e3 = pickle.loads(pickle.dumps(TimeoutExceeded(3.0)))
    assert e3.seconds == 3.0
    assert CircuitOpenError("x", None).retry_after is None


def test_concrete_policies_are_final() -> None:
    """Concrete policies are marked @final: subclassing them is not a supported use."""
    for cls in (resilient.Retry, resilient.Timeout, resilient.Fallback, resilient.Pipeline):
        assert getattr(cls, "__final__", False), cls
    assert typing.get_type_hints(resilient.Policy.__init__)


@pytest.mark.parametrize(
    ("policy", "positional"),
    [
        (resilient.CircuitBreaker, ["name"]),
        (resilient.Bulkhead, ["name", "max_concurrent"]),
        (resilient.Retry, ["name"]),
        (resilient.Timeout, ["seconds"]),
        (resilient.Fallback, ["handler"]),
    ],
)
def test_options_after_the_first_argument_are_keyword_only(
    policy: type[object], positional: list[str]
) -> None:
    """Only the first argument (and Bulkhead's max_concurrent) may be given by position."""
    params = inspect.signature(policy).parameters.values()
    by_position = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert by_position == positional
