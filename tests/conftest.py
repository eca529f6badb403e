"""Every async test runs on both anyio backends, in virtual time."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from resilient.testing import virtual_backend_options

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "default")


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Both backends, each on a virtual clock that jumps when every task is idle."""
    name: str = request.param
    return name, virtual_backend_options(name)


@pytest.fixture(autouse=True)
def _no_leaked_global_observers() -> Any:
    """A test that attaches a global observer must detach it: fail the test that leaks one."""
    from resilient._events import registry

    before = registry.observers
    yield
    leaked = [o for o in registry.observers if o not in before]
    for observer in leaked:
        registry.observers = tuple(o for o in registry.observers if o != observer)
    registry.refresh()
    assert not leaked, f"test left global observers attached: {leaked!r}"
