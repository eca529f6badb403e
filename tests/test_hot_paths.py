"""Static checks on the policies' code that keep their hot paths cheap."""

from __future__ import annotations

import dis
import importlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

# The bytecode shape checked here (LOAD_GLOBAL, LOAD_ATTR, PRECALL) is CPython 3.11's.
pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11) or sys.implementation.name != "cpython",
    reason="checks CPython 3.11's bytecode for method calls on imported names",
)

POLICY_MODULES = [
    "resilient._policy",
    "resilient._time",
    "resilient._window",
    "resilient.breaker",
    "resilient.bulkhead",
    "resilient.fallback",
    "resilient.pipeline",
    "resilient.retry",
    "resilient.timeout",
]


def _method_calls_on_globals(source: str, namespace: dict[str, object]) -> Iterator[str]:
    """``name.method(...)`` compiled as an attribute load (``name`` a global, not a module).

    A method call on a global compiles to ``LOAD_METHOD``, except where the
    name was bound by an import: then to ``LOAD_ATTR`` and a call.
    """
    stack = [compile(source, "<module>", "exec")]
    while stack:
        code = stack.pop()
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        ins = list(dis.get_instructions(code))
        for i in range(len(ins) - 2):
            load, attr = ins[i], ins[i + 1]
            if load.opname != "LOAD_GLOBAL" or attr.opname != "LOAD_ATTR":
                continue
            value = namespace.get(load.argval)
            if value is None or isinstance(value, types.ModuleType):
                continue
            if ins[i + 2].opname == "PRECALL" or (
                i + 3 < len(ins) and ins[i + 3].opname == "PRECALL"
            ):
                line = load.positions.lineno if load.positions else "?"
                yield f"line {line}: {load.argval}.{attr.argval}()"


@pytest.mark.parametrize("name", POLICY_MODULES)
def test_policy_code_calls_no_method_of_an_imported_object(name: str) -> None:
    """No ``x.method()`` on a non-module global bound by an import in a policy module.

    CPython 3.11 compiles a method call on a name bound by ``from m import x``
    as an attribute load that builds a bound method object on every call
    (``_current.get()`` cost the retry about 0.1 µs a call that way). Bind the
    method once instead, as ``_policy.get_context`` does.
    """
    module = importlib.import_module(name)
    source = Path(module.__file__ or "").read_text()
    assert list(_method_calls_on_globals(source, vars(module))) == []


def test_the_check_finds_such_a_call() -> None:
    """The check above flags ``_current.get()`` written in a module that imports ``_current``."""
    source = (
        "from resilient._policy import _current\nasync def wrapper():\n    return _current.get()\n"
    )
    namespace: dict[str, object] = {}
    exec(compile(source, "<probe>", "exec"), namespace)
    assert list(_method_calls_on_globals(source, namespace)) == ["line 3: _current.get()"]
