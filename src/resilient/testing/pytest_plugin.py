"""The ``resilient`` pytest plugin (entry point ``pytest11``).

Fixtures: ``resilient_clock`` (the test's event loop runs in virtual time),
``faults`` (a :class:`~resilient.testing.faults.Faults` registry, closed at
the end of the test) and ``resilient_events`` (an
:class:`~resilient.testing.faults.EventLog` of every event emitted during the
test). Marker: ``@pytest.mark.faults(target, error=... | seconds=... |
value=..., patch=False, **schedule)``, one registration per mark.

It does nothing unless a test asks for one of its fixtures or its marker.

How ``resilient_clock`` reaches the loop, which the test plugins create:

- pytest-asyncio (strict or auto mode): the test's function-scoped
  ``asyncio.Runner`` is created with ``VirtualTimeEventLoop`` as its loop
  factory (unless a ``pytest_asyncio_loop_factories`` hook already chose one).
  A loop shared with other tests (``loop_scope`` wider than ``"function"``)
  is left alone: the fixture fails unless that loop is already virtual.
- anyio's plugin: the fixture starts the test's runner itself, with the
  ``anyio_backend`` options plus :func:`~resilient.testing.virtual_backend_options`,
  before any function-scoped async fixture of the test, so they and the test
  share it. A runner already running on a real clock (kept by an async fixture
  of wider scope) makes the fixture fail with what to do instead.
"""

from __future__ import annotations

import functools
import inspect
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from ._clock import VirtualClock, VirtualTimeEventLoop, current_clock, virtual_backend_options
from .faults import EventLog, Faults, Schedule

__all__ = ["faults", "resilient_clock", "resilient_events"]

_CLOCK = "resilient_clock"
_MARKER_KINDS = ("error", "seconds", "value")
_MARKER_OPTIONS = {*_MARKER_KINDS, "patch", *Schedule.__annotations__}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults(target, *, error=|seconds=|value=, patch=False, rate=, times=, calls=, "
        "every=, when=, enabled=, seed=): inject a fault into the policies named target (or, with "
        "patch=True, the async function at that dotted path) for this test "
        "(resilient plugin)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test with the faults marker gets the faults fixture, which applies it.
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and item.get_closest_marker("faults") is not None
            and "faults" not in item.fixturenames
        ):
            item.fixturenames.append("faults")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(
    fixturedef: Any, request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """Put the loop of a test that asked for ``resilient_clock`` in virtual time.

    Hooked on the fixture that makes the loop rather than done by the clock
    fixture itself, so the order in which a test lists its fixtures never
    matters. Tests that did not ask are let through untouched.
    """
    argname = fixturedef.argname
    if argname == "_function_scoped_runner":
        # pytest-asyncio (>= 1.0) makes each test's loop in this fixture, from
        # its loop factory (None: the policy's default loop). Only the
        # function-scoped runner is ours to change: wider ones are shared.
        if "_asyncio_loop_factory" in fixturedef.argnames and _CLOCK in request.fixturenames:
            original = fixturedef.func
            fixturedef.func = _with_virtual_loop(original)
            try:
                return (yield)
            finally:
                fixturedef.func = original
    elif (
        argname != _CLOCK
        and fixturedef.scope == "function"
        and (
            inspect.iscoroutinefunction(fixturedef.func)
            or inspect.isasyncgenfunction(fixturedef.func)
        )
        and _CLOCK in request.fixturenames
        and "anyio_backend" in request.fixturenames
    ):
        # An anyio async fixture of a test on the virtual clock: start the
        # virtual runner first, so this fixture runs on it too.
        request.getfixturevalue(_CLOCK)
    return (yield)


def _with_virtual_loop(
    runner_fixture: Callable[..., Iterator[Any]],
) -> Callable[..., Iterator[Any]]:
    @functools.wraps(runner_fixture)
    def runner(**kwargs: Any) -> Iterator[Any]:
        if kwargs.get("_asyncio_loop_factory") is None:
            kwargs["_asyncio_loop_factory"] = VirtualTimeEventLoop
        yield from runner_fixture(**kwargs)

    return runner


async def _on_virtual_clock() -> bool:
    try:
        current_clock()
    except RuntimeError:
        return False
    return True


def _runs_on_pytest_asyncio(request: pytest.FixtureRequest) -> bool:
    if not request.config.pluginmanager.has_plugin("asyncio"):
        return False
    from pytest_asyncio import is_async_test

    return is_async_test(request.node)


def _pytest_asyncio_loop(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """The loop scope and the loop pytest-asyncio runs this test on (creating it if needed)."""
    marker = request.node.get_closest_marker("asyncio")
    kwargs = marker.kwargs if marker is not None else {}
    scope = kwargs.get("loop_scope") or kwargs.get("scope")
    if scope is None:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope") or "function"
        except ValueError:
            scope = "function"
    try:
        runner = request.getfixturevalue(f"_{scope}_scoped_runner")
    except pytest.FixtureLookupError:
        pytest.fail(
            "resilient_clock: this pytest-asyncio version is not supported (needs >= 1.0, "
            "whose tests run in an asyncio.Runner); upgrade pytest-asyncio or use anyio's "
            "plugin",
            pytrace=False,
        )
    return scope, runner.get_loop()


@pytest.fixture
def resilient_clock(request: pytest.FixtureRequest) -> Iterator[VirtualClock]:
    """The test's event loop on a virtual clock: ``now()`` and ``await advance(seconds)``.

    Every sleep and timeout (the policies' and the test's own) completes as soon
    as all tasks are idle, at the exact virtual time it would have in real time.
    """
    if _runs_on_pytest_asyncio(request):
        scope, loop = _pytest_asyncio_loop(request)
        if not isinstance(loop, VirtualTimeEventLoop):
            pytest.fail(
                f"resilient_clock: the test's event loop is shared (loop_scope={scope!r}) "
                "and runs on a real clock. Use loop_scope='function' (the default), or make "
                "every loop virtual with a pytest_asyncio_loop_factories hook in conftest.py "
                "returning {'virtual': resilient.testing.VirtualTimeEventLoop}.",
                pytrace=False,
            )
        yield VirtualClock()
        return
    if "anyio_backend" in request.fixturenames:
        from anyio.pytest_plugin import extract_backend_and_options, get_runner

        name, options = extract_backend_and_options(request.getfixturevalue("anyio_backend"))
        with get_runner(name, {**options, **virtual_backend_options(name)}) as runner:
            if not runner.run_fixture(_on_virtual_clock, {}):
                pytest.fail(
                    "resilient_clock: anyio's test runner was already started on a real "
                    "clock, by an async fixture wider than the test. Put the loop in "
                    "virtual time for the whole scope instead: have the anyio_backend "
                    "fixture return (name, resilient.testing.virtual_backend_options(name)).",
                    pytrace=False,
                )
            yield VirtualClock()
        return
    pytest.fail(
        "resilient_clock: the test is not run by pytest-asyncio or anyio. Mark it "
        "@pytest.mark.asyncio or @pytest.mark.anyio (or, outside a test plugin, use "
        "resilient.testing.run(main)).",
        pytrace=False,
    )


@pytest.fixture
def faults(request: pytest.FixtureRequest) -> Iterator[Faults]:
    """Inject faults into policies by name for this test; all undone at its end.

    Seeded from the test's id, so random faults replay the same way every run.
    """
    seed = zlib.crc32(request.node.nodeid.encode())
    with Faults(seed=seed) as registry:
        for mark in reversed(list(request.node.iter_markers("faults"))):
            _apply_marker(registry, mark)
        yield registry


def _apply_marker(registry: Faults, mark: pytest.Mark) -> None:
    if len(mark.args) != 1:
        raise ValueError(
            f"@pytest.mark.faults: give one target (a policy name, or a dotted path with "
            f"patch=True), got {mark.args!r}"
        )
    (target,) = mark.args
    options = dict(mark.kwargs)
    unknown = sorted(set(options) - _MARKER_OPTIONS)
    if unknown:  # a misspelt kind would otherwise read as "no kind given"
        raise ValueError(
            f"@pytest.mark.faults({target!r}): unknown option {unknown[0]!r} "
            f"(options: {', '.join(sorted(_MARKER_OPTIONS))})"
        )
    patch = options.pop("patch", False)
    if not isinstance(patch, bool):
        raise ValueError(
            f"@pytest.mark.faults({target!r}): patch must be True or False, got {patch!r}"
        )
    kinds = [k for k in _MARKER_KINDS if k in options]
    if len(kinds) != 1:
        raise ValueError(
            f"@pytest.mark.faults({target!r}): give exactly one of error=, seconds= or "
            f"value=, got {kinds or 'none'}"
        )
    if patch:
        registry.patch(target, **options)
    elif kinds == ["error"]:
        registry.inject(target, **options)
    elif kinds == ["seconds"]:
        registry.latency(target, **options)
    else:
        registry.result(target, **options)


@pytest.fixture
def resilient_events() -> Iterator[EventLog]:
    """Every event the policies emit during the test, with ``select``/``count`` filters."""
    with EventLog() as log:
        yield log
