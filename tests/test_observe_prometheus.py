"""PrometheusObserver: events become metrics, live policies become gauges, rules match names."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

import resilient
from resilient import (
    Backoff,
    Bulkhead,
    BulkheadFullError,
    CallFinished,
    CallRejected,
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    Fallback,
    FallbackChain,
    FallbackUsed,
    Policy,
    Retry,
    RetryGaveUp,
    RetryScheduled,
    StateChanged,
    Strategy,
    TimedOut,
    Timeout,
    TimeoutExceeded,
)
from resilient.observe.prometheus import METRICS, STATE_CODES, PrometheusObserver

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "observability" / "prometheus-alerts.yaml"
DOCS = ROOT / "docs" / "observability.md"


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def observer(registry: CollectorRegistry) -> PrometheusObserver:
    return PrometheusObserver(registry)


class StubBreaker(Policy):
    """Something shaped like a CircuitBreaker for the scrape-time gauges."""

    kind = "circuit_breaker"

    def __init__(self, name: str, state: str, failure_rate: float = 0.0, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.state = state
        self.metrics = type(
            "M",
            (),
            {
                "failure_rate": failure_rate,
                "slow_call_rate": 0.25,
                "calls": 4,
                "failed_calls": 2,
                "slow_calls": 1,
                "not_permitted_calls": 0,
            },
        )()

    async def call(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)


def test_call_events_become_outcome_counts_durations_and_error_types(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    """CallFinished counts by outcome (a slow success is 'slow'), times it, names its error type."""
    cb = "circuit_breaker"
    observer(CallFinished(cb, "db", "success", 0.2))
    observer(CallFinished(cb, "db", "success", 7.0, slow=True))
    observer(CallFinished(cb, "db", "failure", 9.0, slow=True, error="ConnectionError"))
    observer(CallFinished(cb, "db", "ignored", 0.1, error="KeyError"))
    observer(CallFinished(cb, "db", "cancelled", 0.3, error="CancelledError"))
    calls = "resilient_calls_total"
    for outcome in ("success", "slow", "failure", "ignored", "cancelled"):
        assert value(registry, calls, kind=cb, name="db", outcome=outcome) == 1.0
    assert value(registry, "resilient_call_duration_seconds_count", kind=cb, name="db") == 5.0
    assert value(registry, "resilient_call_duration_seconds_sum", kind=cb, name="db") == 16.6
    bucket = "resilient_call_duration_seconds_bucket"
    assert value(registry, bucket, kind=cb, name="db", le="5.0") == 3.0
    errors = "resilient_call_errors_total"
    assert value(registry, errors, kind=cb, name="db", error="ConnectionError") == 1.0
    assert value(registry, errors, kind=cb, name="db", error="KeyError") == 1.0
    assert value(registry, errors, kind=cb, name="db", error="CancelledError") is None


def test_other_events_feed_their_counters(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    """Rejections, transitions, retries, give-ups, timeouts and fallbacks each have a metric."""
    observer(CallRejected("bulkhead", "pool", "queue_full"))
    observer(CallRejected("circuit_breaker", "db", "open"))
    observer(StateChanged("circuit_breaker", "db", "closed", "open"))
    observer(RetryScheduled("retry", "net", 1, 0.5, "ConnectionError"))
    observer(RetryScheduled("retry", "net", 2, 1.0, None))
    observer(RetryGaveUp("retry", "net", 3, 1.5, "attempts", "ConnectionError"))
    observer(TimedOut("timeout", "t", 2.0))
    observer(FallbackUsed("fallback_chain", "llm", "cache", "ConnectionError"))
    assert value(
        registry, "resilient_calls_total", kind="bulkhead", name="pool", outcome="rejected"
    )
    reasons = "resilient_rejections_total"
    assert value(registry, reasons, kind="bulkhead", name="pool", reason="queue_full") == 1.0
    assert value(registry, reasons, kind="circuit_breaker", name="db", reason="open") == 1.0
    transitions = "resilient_circuit_breaker_transitions_total"
    assert value(registry, transitions, name="db", from_state="closed", to_state="open") == 1.0
    assert value(registry, "resilient_retries_total", name="net", error="ConnectionError") == 1.0
    assert value(registry, "resilient_retries_total", name="net", error="result") == 1.0
    assert value(registry, "resilient_retry_give_ups_total", name="net", reason="attempts") == 1.0
    assert value(registry, "resilient_calls_total", kind="timeout", name="t", outcome="timeout")
    fallbacks = "resilient_fallbacks_total"
    assert value(registry, fallbacks, kind="fallback_chain", name="llm", strategy="cache") == 1.0
    assert value(
        registry, "resilient_calls_total", kind="fallback_chain", name="llm", outcome="fallback"
    )


@pytest.mark.anyio
async def test_real_policies_report_through_observers_argument(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    """Retry, Timeout, Fallback and FallbackChain attached with observers= are counted."""
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("boom")
        return "ok"

    retry = Retry("p-net", attempts=3, backoff=Backoff.constant(1.0), observers=[observer])
    assert await retry.call(flaky) == "ok"

    async def slow() -> None:
        await anyio.sleep(10)

    with pytest.raises(TimeoutExceeded):
        await Timeout(1.0, name="p-t", observers=[observer]).call(slow)

    async def broken() -> str:
        raise ConnectionError("down")

    assert await Fallback(lambda e: "x", name="p-fb", observers=[observer]).call(broken) == "x"
    chain = FallbackChain(Strategy("cache", lambda: "c"), name="p-chain", observers=[observer])
    assert await chain.call(broken) == "c"

    assert value(registry, "resilient_retries_total", name="p-net", error="ConnectionError") == 2
    calls = "resilient_calls_total"
    assert value(registry, calls, kind="timeout", name="p-t", outcome="timeout") == 1
    assert value(registry, calls, kind="fallback", name="p-fb", outcome="fallback") == 1
    fallbacks = "resilient_fallbacks_total"
    assert value(registry, fallbacks, kind="fallback", name="p-fb", strategy="p-fb") == 1
    assert value(registry, fallbacks, kind="fallback_chain", name="p-chain", strategy="cache") == 1


@pytest.mark.anyio
async def test_bulkhead_gauges_are_read_at_scrape_time(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    """active, waiting and max_concurrent are the bulkhead's own figures when scraped."""
    pool = Bulkhead("g-pool", 2, observers=[observer])
    unwatched = Bulkhead("g-unwatched", 5)
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(pool.call, hold)
        await anyio.sleep(1)
        assert value(registry, "resilient_bulkhead_active", name="g-pool") == 2
        assert value(registry, "resilient_bulkhead_waiting", name="g-pool") == 1
        assert value(registry, "resilient_bulkhead_max_concurrent", name="g-pool") == 2
        release.set()
    assert value(registry, "resilient_bulkhead_active", name="g-pool") == 0
    assert value(registry, "resilient_bulkhead_max_concurrent", name="g-unwatched") is None
    del unwatched


def test_breaker_gauges_show_state_codes_and_rates(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    """State is 0/1/2/3/4 for closed/open/half-open/forced-open/disabled; rates as read."""
    assert STATE_CODES == {"closed": 0, "open": 1, "half_open": 2, "forced_open": 3, "disabled": 4}
    breakers = [
        StubBreaker(f"s-{state}", state, 0.5, observers=[observer]) for state in STATE_CODES
    ]
    for state, code in STATE_CODES.items():
        assert value(registry, "resilient_circuit_breaker_state", name=f"s-{state}") == code
    assert value(registry, "resilient_circuit_breaker_failure_rate", name="s-open") == 0.5
    assert value(registry, "resilient_circuit_breaker_slow_call_rate", name="s-open") == 0.25
    del breakers


def test_same_name_breakers_show_the_worst_and_bulkheads_add_up(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    """Two live breakers sharing a name report the worse state; bulkheads sum (no duplicates)."""
    keep = [
        StubBreaker("twin", "closed", 0.1, observers=[observer]),
        StubBreaker("twin", "open", 0.6, observers=[observer]),
        Bulkhead("twin-pool", 2, observers=[observer]),
        Bulkhead("twin-pool", 3, observers=[observer]),
    ]
    assert value(registry, "resilient_circuit_breaker_state", name="twin") == 1
    assert value(registry, "resilient_circuit_breaker_failure_rate", name="twin") == 0.6
    assert value(registry, "resilient_bulkhead_max_concurrent", name="twin-pool") == 5
    text = generate_latest(registry).decode()
    assert text.count('resilient_circuit_breaker_state{name="twin"}') == 1
    del keep


def test_global_observer_reads_every_live_policy(registry: CollectorRegistry) -> None:
    """Added with add_observer, the observer sees policies built before and after it."""
    before = Bulkhead("glob-before", 1)
    observer = PrometheusObserver(registry)
    resilient.add_observer(observer)
    try:
        after = Bulkhead("glob-after", 4)
        assert value(registry, "resilient_bulkhead_max_concurrent", name="glob-before") == 1
        assert value(registry, "resilient_bulkhead_max_concurrent", name="glob-after") == 4
    finally:
        resilient.remove_observer(observer)
    assert value(registry, "resilient_bulkhead_max_concurrent", name="glob-after") is None
    del before, after


def test_a_policy_that_cannot_be_read_does_not_break_the_scrape(
    registry: CollectorRegistry, observer: PrometheusObserver, caplog: pytest.LogCaptureFixture
) -> None:
    """A breaker whose figures raise is logged and left out; the others are still exported."""
    bad = StubBreaker("bad", "closed", observers=[observer])
    bad.metrics = None  # reading .failure_rate will raise AttributeError
    good = StubBreaker("good", "open", observers=[observer])
    assert value(registry, "resilient_circuit_breaker_state", name="good") == 1
    assert value(registry, "resilient_circuit_breaker_state", name="bad") is None
    assert "could not read" in caplog.text
    del bad, good


def test_duplicate_observer_on_one_registry_is_refused(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    """A second observer on the same registry raises prometheus-client's ValueError."""
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusObserver(registry)


def test_custom_buckets(registry: CollectorRegistry) -> None:
    """buckets= sets the duration histogram's upper bounds."""
    observer = PrometheusObserver(registry, buckets=(1.0, 2.0))
    observer(CallFinished("circuit_breaker", "b", "success", 1.5))
    bucket = "resilient_call_duration_seconds_bucket"
    assert value(registry, bucket, kind="circuit_breaker", name="b", le="1.0") == 0
    assert value(registry, bucket, kind="circuit_breaker", name="b", le="2.0") == 1


@settings(max_examples=30)
@given(message=st.text(min_size=1), arg=st.text(min_size=1))
def test_labels_never_carry_arguments_or_error_messages(message: str, arg: str) -> None:
    """Whatever the error message or call argument, only type names reach the exposition."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    marker_message = f"MSG<{message}>"
    marker_arg = f"ARG<{arg}>"

    async def broken(x: str) -> str:
        raise ValueError(marker_message + x)

    async def main() -> None:
        fb = Fallback(lambda e: "x", name="card-fb", observers=[observer])
        await fb.call(broken, marker_arg)
        retry = Retry("card-r", attempts=2, backoff=Backoff.constant(0), observers=[observer])
        with pytest.raises(ValueError, match="MSG"):
            await retry.call(broken, marker_arg)

    resilient.testing.run(main)
    text = generate_latest(registry).decode()
    assert "MSG<" not in text
    assert "ARG<" not in text
    assert 'error="ValueError"' in text


# -- the alert rules ------------------------------------------------------------------


def exported_names() -> set[str]:
    """Every sample name the observer exports once each of its metrics has a series."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    for event in (
        CallFinished("circuit_breaker", "b", "failure", 1.0, error="E"),
        CallRejected("bulkhead", "p", "max_wait"),
        StateChanged("circuit_breaker", "b", "closed", "open"),
        RetryScheduled("retry", "r", 1, 0.0, "E"),
        RetryGaveUp("retry", "r", 2, 0.0, "attempts", "E"),
        TimedOut("timeout", "t", 1.0),
        FallbackUsed("fallback", "f", "f", "E"),
    ):
        observer(event)
    keep = [StubBreaker("b", "open", observers=[observer]), Bulkhead("p", 1, observers=[observer])]
    names = {sample.name for family in registry.collect() for sample in family.samples}
    del keep
    return names


def rule_metric_names() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) == 4
    return {name for expr in exprs for name in re.findall(r"\bresilient_[a-z_]+\b", expr)}


def test_every_metric_the_rules_name_is_exported() -> None:
    """Each resilient_* name in the alert rules is a sample name the observer really exports."""
    used = rule_metric_names()
    assert used >= {
        "resilient_circuit_breaker_state",
        "resilient_calls_total",
        "resilient_bulkhead_active",
        "resilient_bulkhead_max_concurrent",
        "resilient_call_duration_seconds_bucket",
    }
    assert used <= exported_names()


def test_metrics_table_matches_what_is_exported() -> None:
    """METRICS lists exactly the metric families the observer registers, with their labels."""
    registry = CollectorRegistry()
    PrometheusObserver(registry)
    names = exported_names()
    for info in METRICS:
        base = info.name.removesuffix("_total")
        assert any(n.startswith(base) for n in names), info.name
    described = {family.name for family in registry.collect()}
    assert {m.name.removesuffix("_total") for m in METRICS} == described


def test_docs_document_every_metric_and_label() -> None:
    """docs/observability.md names every metric and each of its labels, and the rules file."""
    text = DOCS.read_text()
    for info in METRICS:
        assert f"`{info.name}`" in text, info.name
        for label in info.labels:
            assert f"`{label}`" in text, (info.name, label)
    assert "prometheus-alerts.yaml" in text


def test_docs_show_the_rules_file_as_it_is() -> None:
    """The alert rules shown on the docs page are the shipped file, word for word."""
    shown = re.search(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert shown is not None
    assert shown.group(1) == RULES.read_text()


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_rules() -> None:
    """promtool check rules passes on the shipped file (run when promtool is installed)."""
    out = subprocess.run(
        [PROMTOOL or "promtool", "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    """A promtool input series on instance "a" of job "app"."""
    inner = ",".join(f'{k}="{v}"' for k, v in {"job": "app", "instance": "a", **labels}.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def alert(name: str, at: str, labels: dict[str, str], summary: str, description: str) -> Any:
    expected = {"exp_labels": {"job": "app", "instance": "a", **labels}}
    expected["exp_annotations"] = {"summary": summary, "description": description}
    return {"eval_time": at, "alertname": name, "exp_alerts": [expected]}


def promtool_tests() -> dict[str, Any]:
    """Series shaped like ours (15 s apart) and the alerts they must raise, word for word."""
    cb = {"kind": "circuit_breaker", "name": "db"}
    bucket = "resilient_call_duration_seconds_bucket"
    inputs = [
        series("resilient_circuit_breaker_state", "0 0 1x10", name="db"),
        series("resilient_circuit_breaker_state", "3x12", name="forced"),
        series("resilient_circuit_breaker_state", "0 1 1 2 1 1 2 1 1 2 1 1", name="flapping"),
        series("resilient_circuit_breaker_state", "0 1 1 0 1 1 0 1 1 0 1 1", name="recovering"),
        series("resilient_calls_total", "0+90x60", outcome="success", **cb),
        series("resilient_calls_total", "0+10x60", outcome="failure", **cb),
        series("resilient_calls_total", "0+500x60", outcome="rejected", **cb),
        series("resilient_bulkhead_active", "10x60", name="pool"),
        series("resilient_bulkhead_max_concurrent", "10x60", name="pool"),
        series(bucket, "0+1x100", le="5.0", **cb),
        series(bucket, "0+10x100", le="7.5", **cb),
        series(bucket, "0+10x100", le="+Inf", **cb),
    ]
    checks = [
        {"eval_time": "1m", "alertname": "ResilientCircuitBreakerOpen", "exp_alerts": []},
        {
            "eval_time": "2m45s",
            "alertname": "ResilientCircuitBreakerOpen",
            "exp_alerts": [
                {
                    "exp_labels": {
                        "severity": "critical",
                        "job": "app",
                        "instance": "a",
                        "name": breaker,
                    },
                    "exp_annotations": {
                        "summary": f"Circuit breaker {breaker} is open",
                        "description": f"Breaker {breaker} on a has been open (or half-open, "
                        "trying) for more than a minute: calls to its dependency are being "
                        "rejected.",
                    },
                }
                for breaker in ("db", "flapping")
            ],
        },
        alert(
            "ResilientHighErrorRate",
            "12m",
            {"severity": "warning", "name": "db"},
            "More than 5% of calls through db fail",
            "10% of the calls through breaker db on a failed over the last 5 minutes.",
        ),
        alert(
            "ResilientBulkheadSaturated",
            "12m",
            {"severity": "warning", "name": "pool"},
            "Bulkhead pool is more than 90% full",
            "Bulkhead pool on a has had more than 90% of its permits taken for 5 minutes; "
            "calls queue or are rejected.",
        ),
        alert(
            "ResilientSlowCalls",
            "20m",
            {"severity": "warning", **cb},
            "p95 latency of db is above 5 s",
            "The 95th percentile duration of calls through circuit_breaker db on a has been "
            "above 5 seconds for 10 minutes (now 7.361s).",
        ),
    ]
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": inputs, "alert_rule_test": checks}],
    }


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_rules_fire_on_the_metric_shapes_we_export(tmp_path: Path) -> None:
    """promtool test rules: each alert fires on series like ours; forced open, recovering: not."""
    tests = tmp_path / "alerts-test.yaml"
    tests.write_text(yaml.safe_dump(promtool_tests()))
    out = subprocess.run(
        [PROMTOOL or "promtool", "test", "rules", str(tests)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


# -- without prometheus-client -----------------------------------------------------------


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """With prometheus-client absent, importing the module says which extra to install."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "resilient.observe.prometheus")
    with pytest.raises(
        ImportError, match=re.escape("pip install 'resilient-policies[prometheus]'")
    ):
        importlib.import_module("resilient.observe.prometheus")


def test_import_resilient_never_imports_the_integrations() -> None:
    """import resilient (and snapshot()) work with prometheus-client and OpenTelemetry absent."""
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "sys.modules['opentelemetry'] = None\n"
        "import resilient, resilient.observe\n"
        "pool = resilient.Bulkhead('x', 1)\n"
        "assert resilient.snapshot().policies[0].name == 'x'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_bulkhead_rejection_is_counted_once(
    registry: CollectorRegistry, observer: PrometheusObserver
) -> None:
    """A rejected call counts once in calls_total (outcome rejected) and once by reason."""

    async def main() -> None:
        pool = Bulkhead("rej-pool", 1, max_wait=0, observers=[observer])
        release = anyio.Event()

        async def hold() -> None:
            await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.call, hold)
            await anyio.sleep(0.1)
            with pytest.raises(BulkheadFullError):
                await pool.call(hold)
            release.set()

    resilient.testing.run(main)
    calls = "resilient_calls_total"
    assert value(registry, calls, kind="bulkhead", name="rej-pool", outcome="rejected") == 1
    reasons = "resilient_rejections_total"
    assert value(registry, reasons, kind="bulkhead", name="rej-pool", reason="max_wait") == 1


# -- the scripted scenario -----------------------------------------------------------------


async def scripted_scenario(
    observer: PrometheusObserver, scrape: Callable[[], str]
) -> tuple[str, str]:
    """A breaker trips and recovers, a bulkhead saturates, retries retry, a fallback answers.

    Returns the scrape taken while the bulkhead was saturated, and the one at the end
    (with the breaker and the bulkhead still alive: their gauges go with them).
    """
    obs = [observer]
    breaker = CircuitBreaker(
        "sc-db",
        window=CountWindow(4),
        minimum_calls=4,
        failure_rate_threshold=0.5,
        slow_call_duration=2.0,
        open_duration=10.0,
        observers=obs,
    )

    async def ok(delay: float = 0.0) -> str:
        await anyio.sleep(delay)
        return "ok"

    async def down() -> str:
        await anyio.sleep(0.5)
        raise ConnectionError("db down")

    await breaker.call(ok)  # success, 0 s
    await breaker.call(ok, 3.0)  # slow success, 3 s
    for _ in range(2):  # failures, 0.5 s each; the second trips the breaker (2 of 4)
        with pytest.raises(ConnectionError):
            await breaker.call(down)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)  # rejected
    await anyio.sleep(10.0)
    await breaker.call(ok, 1.0)  # the half-open trial succeeds: closed again

    pool = Bulkhead("sc-pool", 2, max_queue=1, observers=obs)
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(3):  # two run, one waits
            tg.start_soon(pool.call, hold)
        await anyio.sleep(1.0)
        with pytest.raises(BulkheadFullError):
            await pool.call(hold)  # the queue is full
        saturated = scrape()
        release.set()

    retry = Retry("sc-net", attempts=3, backoff=Backoff.constant(1.0), observers=obs)
    failures = iter([ConnectionError(), ConnectionError()])

    async def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "ok"

    assert await retry.call(flaky) == "ok"  # two retries, then success
    with pytest.raises(ConnectionError):
        await retry.call(down)  # two retries, then it gives up

    fallback = Fallback(lambda exc: "static", name="sc-fallback", observers=obs)
    assert await fallback.call(down) == "static"
    return saturated, scrape()


# Labels come out in alphabetical order. Durations through the breaker: 0, 3, 0.5, 0.5, 1 s.
SCENARIO_END = """
resilient_bulkhead_active{name="sc-pool"} 0.0
resilient_bulkhead_max_concurrent{name="sc-pool"} 2.0
resilient_bulkhead_waiting{name="sc-pool"} 0.0
resilient_call_duration_seconds_bucket{kind="circuit_breaker",le="0.5",name="sc-db"} 3.0
resilient_call_duration_seconds_bucket{kind="circuit_breaker",le="1.0",name="sc-db"} 4.0
resilient_call_duration_seconds_bucket{kind="circuit_breaker",le="2.5",name="sc-db"} 4.0
resilient_call_duration_seconds_bucket{kind="circuit_breaker",le="5.0",name="sc-db"} 5.0
resilient_call_duration_seconds_count{kind="circuit_breaker",name="sc-db"} 5.0
resilient_call_duration_seconds_sum{kind="circuit_breaker",name="sc-db"} 5.0
resilient_call_errors_total{error="ConnectionError",kind="circuit_breaker",name="sc-db"} 2.0
resilient_calls_total{kind="bulkhead",name="sc-pool",outcome="rejected"} 1.0
resilient_calls_total{kind="circuit_breaker",name="sc-db",outcome="failure"} 2.0
resilient_calls_total{kind="circuit_breaker",name="sc-db",outcome="rejected"} 1.0
resilient_calls_total{kind="circuit_breaker",name="sc-db",outcome="slow"} 1.0
resilient_calls_total{kind="circuit_breaker",name="sc-db",outcome="success"} 2.0
resilient_calls_total{kind="fallback",name="sc-fallback",outcome="fallback"} 1.0
resilient_circuit_breaker_failure_rate{name="sc-db"} 0.0
resilient_circuit_breaker_slow_call_rate{name="sc-db"} 0.0
resilient_circuit_breaker_state{name="sc-db"} 0.0
resilient_circuit_breaker_transitions_total{from_state="closed",name="sc-db",to_state="open"} 1.0
resilient_circuit_breaker_transitions_total{from_state="half_open",name="sc-db",to_state="closed"} 1.0
resilient_circuit_breaker_transitions_total{from_state="open",name="sc-db",to_state="half_open"} 1.0
resilient_fallbacks_total{kind="fallback",name="sc-fallback",strategy="sc-fallback"} 1.0
resilient_rejections_total{kind="bulkhead",name="sc-pool",reason="queue_full"} 1.0
resilient_rejections_total{kind="circuit_breaker",name="sc-db",reason="open"} 1.0
resilient_retries_total{error="ConnectionError",name="sc-net"} 4.0
resilient_retry_give_ups_total{name="sc-net",reason="attempts"} 1.0
"""  # noqa: E501

SCENARIO_SATURATED = """
resilient_bulkhead_active{name="sc-pool"} 2.0
resilient_bulkhead_max_concurrent{name="sc-pool"} 2.0
resilient_bulkhead_waiting{name="sc-pool"} 1.0
"""

SHOWN_BUCKETS = ('le="0.5"', 'le="1.0"', 'le="2.5"', 'le="5.0"')


def scenario_lines(text: str) -> list[str]:
    """The scenario's samples, without _created timestamps and with four buckets only."""
    lines = []
    for line in text.splitlines():
        if 'name="sc-' not in line or line.startswith("#") or "_created{" in line:
            continue
        if "_bucket{" in line and not any(le in line for le in SHOWN_BUCKETS):
            continue
        lines.append(line)
    return sorted(lines)


@pytest.mark.anyio
async def test_scripted_scenario_scrape_shows_exact_counts(registry: CollectorRegistry) -> None:
    """After the scripted scenario, generate_latest() shows exactly the expected samples."""
    observer = PrometheusObserver(registry)
    scrape = lambda: generate_latest(registry).decode()  # noqa: E731
    saturated, end = await scripted_scenario(observer, scrape)
    bulkhead_now = [line for line in scenario_lines(saturated) if "resilient_bulkhead_" in line]
    assert bulkhead_now == SCENARIO_SATURATED.split("\n")[1:-1]
    expected = sorted(SCENARIO_END.strip().splitlines())
    assert scenario_lines(end) == expected


@pytest.mark.anyio
async def test_a_scrape_from_another_thread_reads_the_breaker(registry: CollectorRegistry) -> None:
    """Scraped from a worker thread (as start_http_server does), an open breaker shows 1."""
    observer = PrometheusObserver(registry)
    breaker = CircuitBreaker("thr-db", minimum_calls=1, observers=[observer])

    async def down() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await breaker.call(down)
    text = (await anyio.to_thread.run_sync(generate_latest, registry)).decode()
    assert 'resilient_circuit_breaker_state{name="thr-db"} 1.0' in text
    assert 'resilient_circuit_breaker_failure_rate{name="thr-db"} 1.0' in text


# -- every event, counted as a plain model counts it -----------------------------------------

names = st.sampled_from(["a", "b"])
errors = st.one_of(st.none(), st.sampled_from(["ConnectionError", "KeyError"]))
any_event = st.one_of(
    st.builds(
        CallFinished,
        st.sampled_from(["circuit_breaker", "bulkhead"]),
        names,
        st.sampled_from(["success", "failure", "ignored", "cancelled"]),
        st.floats(0, 100),
        st.booleans(),
        errors,
    ),
    st.builds(CallRejected, st.sampled_from(["circuit_breaker", "bulkhead"]), names, names),
    st.builds(StateChanged, st.just("circuit_breaker"), names, names, names),
    st.builds(RetryScheduled, st.just("retry"), names, st.integers(1, 5), st.floats(0, 9), errors),
    st.builds(
        RetryGaveUp,
        st.just("retry"),
        names,
        st.integers(1, 5),
        st.floats(0, 9),
        st.sampled_from(["attempts", "deadline", "retry_after"]),
        errors,
    ),
    st.builds(TimedOut, st.just("timeout"), names, st.floats(0.1, 9)),
    st.builds(FallbackUsed, st.sampled_from(["fallback", "fallback_chain"]), names, names, errors),
)


def model_counts(events: list[Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """What each counter must read after ``events``, written out event by event."""
    counts: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def inc(metric: str, **labels: str) -> None:
        key = (metric, frozenset(labels.items()))
        counts[key] = counts.get(key, 0.0) + 1

    for e in events:
        if isinstance(e, CallFinished):
            outcome = "slow" if (e.outcome, e.slow) == ("success", True) else e.outcome
            inc("resilient_calls_total", kind=e.kind, name=e.name, outcome=outcome)
            inc("resilient_call_duration_seconds_count", kind=e.kind, name=e.name)
            if e.error is not None and e.outcome != "cancelled":
                inc("resilient_call_errors_total", kind=e.kind, name=e.name, error=e.error)
        elif isinstance(e, CallRejected):
            inc("resilient_calls_total", kind=e.kind, name=e.name, outcome="rejected")
            inc("resilient_rejections_total", kind=e.kind, name=e.name, reason=e.reason)
        elif isinstance(e, StateChanged):
            inc("resilient_circuit_breaker_transitions_total", name=e.name, from_state=e.old,
                to_state=e.new)  # fmt: skip
        elif isinstance(e, RetryScheduled):
            inc("resilient_retries_total", name=e.name, error=e.error or "result")
        elif isinstance(e, RetryGaveUp):
            inc("resilient_retry_give_ups_total", name=e.name, reason=e.reason)
        elif isinstance(e, TimedOut):
            inc("resilient_calls_total", kind=e.kind, name=e.name, outcome="timeout")
            inc("resilient_call_errors_total", kind=e.kind, name=e.name, error="TimeoutExceeded")
        elif isinstance(e, FallbackUsed):
            inc("resilient_calls_total", kind=e.kind, name=e.name, outcome="fallback")
            inc("resilient_fallbacks_total", kind=e.kind, name=e.name, strategy=e.strategy)
    return counts


@given(st.lists(any_event, max_size=40))
def test_every_counter_matches_a_model_of_the_events(events: list[Any]) -> None:
    """For any sequence of events, every counter sample equals the model's count, none extra."""
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    for event in events:
        observer(event)
    got = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.endswith(("_total", "_count"))
    }
    assert got == model_counts(events)


def test_default_registry_is_the_global_one_and_unregister_cleans_up() -> None:
    """registry=None registers on prometheus-client's REGISTRY; unregister() takes it all off."""
    from prometheus_client import REGISTRY

    observer = PrometheusObserver()
    try:
        assert observer.registry is REGISTRY
        observer(CallRejected("bulkhead", "glob-reg", "max_wait"))
        labels = {"kind": "bulkhead", "name": "glob-reg", "outcome": "rejected"}
        assert REGISTRY.get_sample_value("resilient_calls_total", labels) == 1
    finally:
        observer.unregister()
    assert REGISTRY.get_sample_value("resilient_calls_total", labels) is None
    PrometheusObserver().unregister()  # the names are free again
