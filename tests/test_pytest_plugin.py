"""The pytest plugin, run the way users run it: test files in a fresh pytest session (pytester).

Each user file is run under pytest-asyncio strict mode, pytest-asyncio auto
mode and anyio's plugin (asyncio and trio), and must pass and fail exactly
where it should.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mode:
    """How a user's project runs async tests: its ini, its test mark and async-fixture
    decorator, and how many runs each test gets (anyio: one per backend)."""

    ini: str
    mark: str
    async_fixture: str
    runs: int


STRICT_INI = "asyncio_mode = strict\nasyncio_default_fixture_loop_scope = function"
MODES = {
    "asyncio-strict": Mode(
        STRICT_INI, "pytestmark = pytest.mark.asyncio", "@pytest_asyncio.fixture", 1
    ),
    "asyncio-auto": Mode(
        "asyncio_mode = auto\nasyncio_default_fixture_loop_scope = function",
        "",
        "@pytest.fixture",
        1,
    ),
    "anyio": Mode(STRICT_INI, "pytestmark = pytest.mark.anyio", "@pytest.fixture", 2),
    # anyio's own auto mode, with pytest-asyncio switched off
    "anyio-auto": Mode("anyio_mode = auto\naddopts = -p no:asyncio", "", "@pytest.fixture", 2),
}


def run_user_tests(
    pytester: pytest.Pytester, mode: str, files: dict[str, str], *args: str
) -> pytest.RunResult:
    """Write ``files`` (``{MARK}`` and ``{ASYNC_FIXTURE}`` filled in for the mode), run pytest."""
    m = MODES[mode]
    pytester.makeini(f"[pytest]\n{m.ini}\n")
    for name, source in files.items():
        pytester.path.joinpath(name).write_text(
            source.replace("{MARK}", m.mark).replace("{ASYNC_FIXTURE}", m.async_fixture)
        )
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


CLOCK_TESTS = '''
import asyncio, time
import anyio, pytest, pytest_asyncio
from resilient import Backoff, Retry, Timeout, TimeoutExceeded
from resilient.testing import current_clock

{MARK}

retry = Retry("net", attempts=4, backoff=Backoff.constant(30.0))

async def answer():
    return 42

{ASYNC_FIXTURE}
async def warmed_up():
    """An async fixture set up before the clock fixture: it must share the virtual clock."""
    start = anyio.current_time()
    await anyio.sleep(100)
    yield anyio.current_time() - start

async def test_everything_fast_forwards(warmed_up, resilient_clock, faults):
    real = time.perf_counter()
    assert warmed_up == 100
    start = resilient_clock.now()
    faults.inject("net", error=ConnectionError, times=3)
    assert await retry.call(answer) == 42             # three 30 s backoffs
    await anyio.sleep(3600)                           # the test's own sleep
    with pytest.raises(TimeoutExceeded):
        await Timeout(10.0).call(anyio.sleep, 100)    # a timeout firing
    with anyio.move_on_after(5):                      # the test's own timeout
        await anyio.sleep(50)
    await resilient_clock.advance(10)
    assert resilient_clock.now() - start == 90 + 3600 + 10 + 5 + 10
    assert time.perf_counter() - real < 60            # an hour of sleeps, in no real hour

async def test_a_wrong_expectation_fails(resilient_clock):
    start = resilient_clock.now()
    await anyio.sleep(5)
    assert resilient_clock.now() - start == 4

async def test_without_the_clock_time_is_real():
    with pytest.raises(RuntimeError, match="not on a virtual clock"):
        current_clock()
'''


@pytest.mark.parametrize("mode", list(MODES))
def test_clock_fixture_puts_the_test_loop_in_virtual_time(
    pytester: pytest.Pytester, mode: str
) -> None:
    """Policies, the test's sleeps and timeouts, and async fixtures run in virtual time."""
    result = run_user_tests(pytester, mode, {"test_clock.py": CLOCK_TESTS})
    runs = MODES[mode].runs
    result.assert_outcomes(passed=2 * runs, failed=runs)
    result.stdout.fnmatch_lines(["*assert (5.0 - *) == 4"])


FAULT_TESTS = """
import pytest
from resilient import (
    Backoff, CircuitBreaker, Fallback, Pipeline, Retry, RetryScheduled, StateChanged,
)
import service

{MARK}

retry = Retry("db", attempts=3, backoff=Backoff.constant(1.0))

@pytest.fixture(autouse=True)
def in_virtual_time(resilient_clock):
    "every test of this module runs in virtual time"

async def query(x):
    return f"row {x}"

async def test_inject_reaches_a_policy_built_before(faults, resilient_events):
    faults.inject("db", error=ConnectionError, times=2)
    assert await retry.call(query, 1) == "row 1"
    assert faults.calls("db") == 3
    assert resilient_events.count(RetryScheduled, name="db") == 2

async def test_faults_are_undone_after_each_test(faults):
    assert await retry.call(query, 2) == "row 2"
    with pytest.raises(ValueError, match="nothing is registered"):
        faults.calls("db")

async def test_latency_result_and_a_policy_built_later(faults, resilient_clock):
    faults.latency("later", seconds=2.0, every=2)
    faults.result("cache", value="cached")
    later = Retry("later", attempts=1)
    cache = Fallback(lambda exc: None, name="cache")
    start = resilient_clock.now()
    assert [await later.call(query, i) for i in range(4)] == [f"row {i}" for i in range(4)]
    assert resilient_clock.now() - start == 4.0
    assert await cache.call(query, 9) == "cached"

async def test_breaker_events(faults, resilient_events):
    breaker = CircuitBreaker("api", minimum_calls=2, open_duration=30.0)
    faults.inject("api", error=ConnectionError)
    for _ in range(3):
        with pytest.raises(Exception):
            await breaker.call(query, 0)
    assert resilient_events.count(StateChanged, name="api", new="open") == 1
    assert faults.calls("api") == 2

async def test_patch_a_function_without_a_policy(faults):
    faults.patch("service.lookup", error=TimeoutError, calls={2})
    assert await service.lookup("a") == "found a"
    with pytest.raises(TimeoutError):
        await service.lookup("b")
    assert faults.calls("service.lookup") == 2

@pytest.mark.faults("db", error=ConnectionError)
@pytest.mark.faults("service.lookup", patch=True, value="patched")
async def test_markers_without_requesting_the_fixture():
    with pytest.raises(ConnectionError):
        await retry.call(query, 3)
    assert await service.lookup("c") == "patched"

@pytest.mark.faults("db", error=ConnectionError, times=1)
async def test_marker_with_the_fixture(faults):
    assert await retry.call(query, 4) == "row 4"
    assert faults.calls("db") == 2

async def test_patch_is_undone():
    assert await service.lookup("d") == "found d"

async def test_a_missed_expectation_fails(faults):
    faults.inject("db", error=ConnectionError, times=1)
    with pytest.raises(ConnectionError):
        await retry.call(query, 5)        # the retry recovers: this fails

@pytest.mark.faults("db", seconds=1.0, error=ValueError)
async def test_a_bad_marker_is_an_error():
    pass

@pytest.mark.faults("db", eror=ValueError)
async def test_a_misspelt_marker_option_is_named():
    pass

@pytest.mark.faults("service.lookup", patch="yes", error=ValueError)
async def test_a_marker_patch_must_be_true_or_false():
    pass
"""

SERVICE = """
async def lookup(key):
    return f"found {key}"
"""


@pytest.mark.parametrize("mode", list(MODES))
def test_faults_fixture_marker_and_events(pytester: pytest.Pytester, mode: str) -> None:
    """Faults by name and by patch, the marker, call counts and events, all undone per test."""
    result = run_user_tests(
        pytester, mode, {"service.py": SERVICE, "test_faults_user.py": FAULT_TESTS}
    )
    runs = MODES[mode].runs
    result.assert_outcomes(passed=8 * runs, failed=runs, errors=3 * runs)
    result.stdout.fnmatch_lines(["*DID NOT RAISE*ConnectionError*"])
    result.stdout.fnmatch_lines(["*exactly one of error=, seconds= or value=*"])
    result.stdout.fnmatch_lines(["*faults('db'): unknown option 'eror' (options: calls, *"])
    result.stdout.fnmatch_lines(["*patch must be True or False, got 'yes'*"])


MISUSE_TESTS = """
import pytest

def test_sync_test(resilient_clock):
    pass

@pytest.mark.asyncio(loop_scope="module")
async def test_shared_asyncio_loop(resilient_clock):
    pass

@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"

@pytest.fixture(scope="module")
async def module_resource():
    yield

@pytest.mark.anyio
async def test_anyio_runner_kept_by_a_module_fixture(module_resource, resilient_clock):
    pass
"""


def test_clock_misuse_fails_with_what_to_do(pytester: pytest.Pytester) -> None:
    """Where virtual time cannot be set up, the fixture says why and what to do instead."""
    result = run_user_tests(pytester, "asyncio-strict", {"test_misuse.py": MISUSE_TESTS})
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            "*not run by pytest-asyncio or anyio*resilient.testing.run*",
            "*loop is shared (loop_scope='module')*pytest_asyncio_loop_factories*",
            "*runner was already started on a real clock*virtual_backend_options*",
        ]
    )


SHARED_VIRTUAL_LOOP = {
    "conftest.py": """
import resilient.testing

def pytest_asyncio_loop_factories(config, item):
    return {"virtual": resilient.testing.VirtualTimeEventLoop}
""",
    "test_shared.py": """
import asyncio, pytest

@pytest.mark.asyncio(loop_scope="module")
async def test_first(resilient_clock):
    await asyncio.sleep(3600)
    assert resilient_clock.now() >= 3600

@pytest.mark.asyncio(loop_scope="module")
async def test_second(resilient_clock):
    start = resilient_clock.now()
    await asyncio.sleep(60)
    assert resilient_clock.now() - start == 60
""",
}


def test_shared_loop_made_virtual_by_a_loop_factory_hook(pytester: pytest.Pytester) -> None:
    """The documented way out for a module-scoped pytest-asyncio loop works."""
    result = run_user_tests(pytester, "asyncio-strict", SHARED_VIRTUAL_LOOP)
    result.assert_outcomes(passed=2)


NOTHING_ASKED = """
import asyncio, pytest
from resilient._events import registry

{MARK}

async def test_untouched():
    assert type(asyncio.get_running_loop()).__name__ != "VirtualTimeEventLoop"
    assert registry.on_new_policy is None
    assert registry.observers == ()
"""


def test_plugin_does_nothing_unless_asked(pytester: pytest.Pytester) -> None:
    """A test that asks for no fixture or marker gets a real loop and no hooks."""
    result = run_user_tests(pytester, "asyncio-auto", {"test_nothing.py": NOTHING_ASKED})
    result.assert_outcomes(passed=1)


def _docs_example() -> dict[str, str]:
    """The files of the worked example in docs/testing.md, by their titles."""
    page = (ROOT / "docs" / "testing.md").read_text()
    blocks = re.findall(r'```python title="([^"]+)"\n(.*?)```', page, re.DOTALL)
    return dict(blocks)


@pytest.mark.parametrize("mode", list(MODES))
def test_docs_worked_example_passes(pytester: pytest.Pytester, mode: str) -> None:
    """The worked example of "Testing your resilience" passes as written, in every mode."""
    files = _docs_example()
    assert set(files) == {"assistant.py", "test_assistant.py"}
    mark = "pytestmark = pytest.mark.anyio"
    assert mark in files["test_assistant.py"]
    files["test_assistant.py"] = files["test_assistant.py"].replace(mark, "{MARK}")
    result = run_user_tests(pytester, mode, files)
    result.assert_outcomes(passed=4 * MODES[mode].runs)


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    """``--strict-markers`` accepts ``faults``, and ``--markers`` documents it."""
    result = run_user_tests(pytester, "asyncio-strict", {}, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.faults(target, *, error=|seconds=|value=*"])
