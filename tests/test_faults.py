"""The fault registry: arming policies by name, counting calls, patching, undoing; the event log."""

from __future__ import annotations

import functools
import math
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import (
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    FallbackUsed,
    Pipeline,
    Policy,
    Retry,
    RetryScheduled,
    Timeout,
    TimeoutExceeded,
)
from resilient._events import registry
from resilient._time import now
from resilient.testing.faults import EventLog, Faults, UnmatchedFaultWarning

pytestmark = pytest.mark.anyio


async def service(x: int = 1) -> str:
    return f"real {x}"


def quick_retry(name: str, attempts: int = 4) -> Retry:
    return Retry(name, attempts=attempts, backoff=Backoff.constant(1.0))


@pytest.fixture
def faults() -> Iterator[Faults]:
    with Faults() as registry_:
        yield registry_


async def test_arms_live_policies_and_disarms_at_close() -> None:
    """A fault reaches a policy built before it, and closing the registry removes it."""
    retry = quick_retry("llm")
    with Faults() as faults:
        faults.inject("llm", error=ConnectionError, times=2)
        start = now()
        assert await retry.call(service) == "real 1"
        assert now() - start == pytest.approx(2.0)  # two backoffs: the retry saw two failures
        assert faults.calls("llm") == 3
    assert retry._fault is None
    assert faults.calls("llm") == 3  # still readable after close


async def test_arms_policies_built_later_only_while_open() -> None:
    """Policies built while the registry is open are armed; the hook is restored at close."""
    assert registry.on_new_policy is None
    with Faults() as faults:
        faults.inject("late", error=ConnectionError)
        late = quick_retry("late", attempts=1)
        with pytest.raises(ConnectionError):
            await late.call(service)
    assert registry.on_new_policy is None
    after = quick_retry("late", attempts=1)
    assert await after.call(service) == "real 1"
    assert await late.call(service) == "real 1"


async def test_breaker_built_while_open_records_injected_failures(faults: Faults) -> None:
    """A breaker built after the fault was registered counts the injected errors and opens."""
    faults.inject("api", error=ConnectionError)
    breaker = CircuitBreaker("api", minimum_calls=2, open_duration=30.0)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(service)
    with pytest.raises(CircuitOpenError):
        await breaker.call(service)
    assert faults.calls("api") == 2


async def test_kind_name_target_selects_one_kind(faults: Faults) -> None:
    """``"kind:name"`` arms only the policy of that kind when a name is shared."""
    retry = quick_retry("svc", attempts=1)
    timeout = Timeout(5.0, name="svc")
    faults.inject("timeout:svc", error=ConnectionError)
    assert await retry.call(service) == "real 1"
    with pytest.raises(ConnectionError):
        await timeout.call(service)


async def test_pipeline_target_wraps_the_innermost_call(faults: Faults) -> None:
    """A fault on a pipeline hits the innermost call: every attempt, inside the timeout."""
    slow = Pipeline(
        Fallback(lambda exc: f"fallback after {type(exc).__name__}"),
        quick_retry("inner", attempts=2),
        Timeout(3.0),
        name="ask",
    )

    @slow
    async def ask(x: int) -> str:
        return f"real {x}"

    faults.latency("ask", seconds=10.0)
    start = now()
    assert await ask(7) == "fallback after TimeoutExceeded"
    assert now() - start == pytest.approx(3.0 + 1.0 + 3.0)  # attempt, backoff, attempt
    assert faults.calls("ask") == 2


async def test_fault_on_a_policy_wraps_what_it_calls(faults: Faults) -> None:
    """A fault on a timeout acts inside it: injected latency is cut by that timeout."""
    timeout = Timeout(2.0, name="t")
    faults.latency("t", seconds=10.0)
    with pytest.raises(TimeoutExceeded):
        await timeout.call(service)


async def test_faults_on_one_target_apply_in_order(faults: Faults) -> None:
    """Latency registered first, then an error: the call waits, then fails; handles count."""
    retry = quick_retry("db", attempts=1)
    slow = faults.latency("db", seconds=5.0)
    failing = faults.inject("db", error=ConnectionError, times=1)
    start = now()
    with pytest.raises(ConnectionError):
        await retry.call(service)
    assert now() - start == pytest.approx(5.0)
    assert await retry.call(service) == "real 1"
    assert (slow.injected, failing.injected, failing.call_count) == (2, 1, 2)


async def test_result_and_switching_a_fault_off(faults: Faults) -> None:
    """A result fault answers in place of the call until its handle is switched off."""
    retry = quick_retry("cache", attempts=1)
    stale = faults.result("cache", value="stale")
    assert await retry.call(service) == "stale"
    stale.enabled = False
    assert await retry.call(service) == "real 1"
    assert faults.calls("cache") == 2


async def test_spy_counts_without_injecting(faults: Faults) -> None:
    """A spy counts the calls through a target; ``calls`` of an unknown target says what to do."""
    retry = quick_retry("quiet")
    with pytest.raises(ValueError, match=r"nothing is registered for target 'quiet'.*spy"):
        faults.calls("quiet")
    faults.spy("quiet")
    for _ in range(3):
        assert await retry.call(service) == "real 1"
    assert faults.calls("quiet") == 3


async def test_default_seeds_replay_random_faults() -> None:
    """Two registries with one seed hit the same calls with ``rate``; another seed differs."""

    async def pattern(seed: int) -> list[bool]:
        retry = quick_retry("flaky", attempts=1)
        with Faults(seed=seed) as faults:
            faults.inject("flaky", error=ConnectionError, rate=0.5)
            hits = []
            for _ in range(64):
                try:
                    await retry.call(service)
                    hits.append(False)
                except ConnectionError:
                    hits.append(True)
            return hits

    assert await pattern(7) == await pattern(7)
    assert await pattern(7) != await pattern(8)


def test_injectors_are_not_live_policies(faults: Faults) -> None:
    """The registry's own injectors stay out of the live-policy set (and out of snapshots)."""
    target = quick_retry("x")
    fault = faults.inject("x", error=ConnectionError)
    assert fault not in registry.policies
    assert target in registry.policies


def test_a_target_no_policy_answered_to_warns_at_close() -> None:
    """A misspelt target (or a wrong kind) never fails by itself: closing the registry
    warns, naming it; a target a policy answered to, before or after, does not."""
    early = quick_retry("early")
    faults = Faults()
    faults.open()
    faults.inject("eraly", error=ConnectionError)
    faults.spy("breaker:early")  # the kind is circuit_breaker, and it is a retry
    faults.inject("retry:early", error=ConnectionError)
    faults.latency("late", seconds=1.0)
    late = quick_retry("late")
    with pytest.warns(UnmatchedFaultWarning) as caught:
        faults.close()
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "no policy named 'breaker:early'" in messages[0]
    assert "'kind:name' (kinds: circuit_breaker, bulkhead, retry," in messages[0]
    assert "no policy named 'eraly'" in messages[1]
    assert early.name == "early"
    assert late.name == "late"


def test_one_open_registry_and_registering_needs_it_open() -> None:
    """A second open registry is refused; a registry not open (or closed) refuses faults."""
    with Faults(), pytest.raises(RuntimeError, match="another fault registry is open"):
        Faults().open()
    never_opened = Faults()
    with pytest.raises(RuntimeError, match="not open"):
        never_opened.inject("x", error=ConnectionError)
    with Faults() as used:
        pass
    with pytest.raises(RuntimeError, match="was closed; make a new one"):
        used.open()


def test_registration_errors(faults: Faults) -> None:
    """Bad targets and fault options raise ``ValueError`` naming them."""
    with pytest.raises(ValueError, match="target must be a non-empty str, got ''"):
        faults.inject("", error=ConnectionError)
    with pytest.raises(ValueError, match="times must be an int >= 0, got -2"):
        faults.inject("x", error=ConnectionError, times=-2)
    with pytest.raises(ValueError, match=r"exactly one of error=, seconds= or value=.*none"):
        faults.patch("os.getcwd")
    with pytest.raises(ValueError, match="seed must be an int, got 'x'"):
        Faults(seed="x")  # type: ignore[arg-type]


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module ``fake_service`` with async functions and a class, importable by name."""
    module = types.ModuleType("fake_service")

    async def fetch(x: int) -> str:
        return f"fetched {x}"

    def sync_fetch(x: int) -> str:
        return f"sync {x}"

    class Client:
        async def get(self, x: int) -> str:
            return f"get {x}"

        @staticmethod
        async def ping() -> str:
            return "pong"

        @classmethod
        async def build(cls) -> str:
            return cls.__name__

    class SyncCallable:
        def __call__(self, x: int) -> str:
            return f"sync {x}"

    class AsyncCallable:
        async def __call__(self, x: int) -> str:
            return f"called {x}"

    module.fetch = fetch  # type: ignore[attr-defined]
    module.sync_fetch = sync_fetch  # type: ignore[attr-defined]
    module.builtin = math.sqrt  # type: ignore[attr-defined]
    module.sync_partial = functools.partial(sync_fetch, 1)  # type: ignore[attr-defined]
    module.sync_callable = SyncCallable()  # type: ignore[attr-defined]
    module.async_partial = functools.partial(fetch, 7)  # type: ignore[attr-defined]
    module.async_callable = AsyncCallable()  # type: ignore[attr-defined]
    module.Client = Client  # type: ignore[attr-defined]
    module.client = Client()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_service", module)
    return module


async def test_patch_module_function_and_restore(fake_module: Any) -> None:
    """A patched function fails as scheduled, counts its calls, and is restored at close."""
    original = fake_module.fetch
    with Faults() as faults:
        faults.patch("fake_service.fetch", error=ConnectionError, calls={2})
        assert await fake_module.fetch(1) == "fetched 1"
        with pytest.raises(ConnectionError):
            await fake_module.fetch(2)
        faults.patch("fake_service.fetch", value="canned", times=1)  # stacks on the same patch
        assert await fake_module.fetch(3) == "canned"
        assert faults.calls("fake_service.fetch") == 3
    assert fake_module.fetch is original


async def test_patch_methods_of_every_kind(fake_module: Any) -> None:
    """Plain, static and class methods, and a method of an object, keep working when patched."""
    client_type = fake_module.Client
    with Faults() as faults:
        for path in ("Client.get", "Client.ping", "Client.build", "client.get"):
            faults.patch(f"fake_service.{path}", seconds=1.0)
        start = now()
        assert await client_type().get(1) == "get 1"
        assert await client_type.ping() == "pong"
        assert await client_type.build() == "Client"
        assert await fake_module.client.get(2) == "get 2"  # its own patch, then the class's
        assert now() - start == pytest.approx(5.0)
    assert "get" not in vars(fake_module.client)
    assert isinstance(vars(client_type)["ping"], staticmethod)
    assert await client_type.ping() == "pong"
    assert await fake_module.client.get(3) == "get 3"


def test_patch_errors(fake_module: Any, faults: Faults) -> None:
    """Patching something missing, not importable, or not async is refused with a reason."""
    cases = [
        ("fetch", "must be a dotted path"),
        ("fake_service.nothing", "has no attribute 'nothing'"),
        ("no_such_module_xyz.fn", "cannot import 'no_such_module_xyz'"),
        ("fake_service.sync_fetch", "is not an async callable"),
        # sync callables that are not plain functions: their callers would get coroutines
        ("fake_service.builtin", "is not an async callable .* got <built-in function sqrt>"),
        ("fake_service.sync_partial", "is not an async callable .* got functools.partial"),
        ("fake_service.sync_callable", "is not an async callable"),
        ("fake_service.Client", "is not an async callable"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            faults.patch(path, error=ConnectionError)
    with pytest.raises(ValueError, match="cannot be built from a message"):
        faults.patch("fake_service.fetch", error=UnicodeDecodeError)
    assert fake_module.fetch.__name__ == "fetch"
    with pytest.raises(ValueError) as refused:
        faults.patch("no_such_module_xyz.fn", error=ConnectionError)
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__
    assert fake_module.builtin is math.sqrt


async def test_patch_takes_async_callables_that_are_not_functions(fake_module: Any) -> None:
    """A partial of an async function and an object with an async ``__call__`` are patched."""
    with Faults() as faults:
        faults.patch("fake_service.async_partial", value="canned")
        faults.patch("fake_service.async_callable", value="canned")
        assert await fake_module.async_partial() == "canned"
        assert await fake_module.async_callable(1) == "canned"
    assert await fake_module.async_partial() == "fetched 7"
    assert await fake_module.async_callable(1) == "called 1"


async def test_event_log_selects_and_counts() -> None:
    """The log keeps events in order and filters them by type and fields, then detaches."""
    retry = quick_retry("r", attempts=3)
    flaky = Pipeline(Fallback(lambda exc: "fb", name="fb"), retry)
    with EventLog() as log, Faults() as faults:
        faults.inject("r", error=ConnectionError)
        assert await flaky.call(service) == "fb"
    assert log.count(RetryScheduled, name="r") == 2
    assert [e.attempt for e in log.select(RetryScheduled)] == [1, 2]
    assert log.count(FallbackUsed, strategy="fb", error="ConnectionError") == 1
    assert log.count(name="r") == 3  # two retries scheduled, one gave up
    assert len(log) == 4
    assert list(log) == log.events
    with pytest.raises(ValueError, match="RetryScheduled has no field 'atempt'"):
        log.select(RetryScheduled, atempt=1)
    with pytest.raises(ValueError, match="event_type must be an Event class"):
        log.select(int)  # type: ignore[type-var]
    log.clear()
    assert len(log) == 0
    assert log not in registry.observers


_NAMES = ("a", "b")
_KINDS = ("retry", "timeout")


def _build(kind: str, name: str) -> Policy:
    return quick_retry(name) if kind == "retry" else Timeout(1.0, name=name)


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("build"), st.sampled_from(_KINDS), st.sampled_from(_NAMES)),
            st.tuples(
                st.just("target"),
                st.sampled_from(_NAMES + tuple(f"{k}:{n}" for k in _KINDS for n in _NAMES)),
                st.just(""),
            ),
        ),
        max_size=12,
    )
)
def test_armed_exactly_the_matching_policies(steps: list[tuple[str, str, str]]) -> None:
    """Whatever the order of building and targeting, a policy is armed iff a target matches it."""
    built: list[Policy] = []
    targets: set[str] = set()
    with warnings.catch_warnings(), Faults() as faults:
        warnings.simplefilter("ignore", UnmatchedFaultWarning)  # targets nothing matches
        for step, a, b in steps:
            if step == "build":
                built.append(_build(a, b))
            else:
                faults.spy(a)
                targets.add(a)
        for policy in built:
            labels = {policy.name, f"{policy.kind}:{policy.name}"}
            assert (policy._fault is not None) == bool(labels & targets)
    assert all(policy._fault is None for policy in built)
