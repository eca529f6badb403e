"""The runnable examples in the docs run (in virtual time) and the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from resilient.testing import run, virtual_backend_options

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def runnable_examples() -> list[Any]:
    """Every python block in docs/ that runs itself with ``anyio.run``."""
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for n, block in enumerate(BLOCK.findall(page.read_text())):
            if "anyio.run(" in block or "from resilient.testing import run" in block:
                found.append(pytest.param(block, id=f"{page.relative_to(ROOT)}#{n}"))
    return found


@pytest.mark.parametrize("code", runnable_examples())
def test_docs_example_runs(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A documented example runs to completion, with anyio.run put in virtual time."""
    real_run = anyio.run

    def virtual_run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        options = virtual_backend_options("asyncio")
        return real_run(fn, *args, backend="asyncio", backend_options=options)

    monkeypatch.setattr(anyio, "run", virtual_run)
    exec(compile(code, "<docs example>", "exec"), {"__name__": "__docs__"})


def test_quickstart_runs_in_virtual_time(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/quickstart.py tells its story: retries, timeouts and fallbacks happen."""
    namespace: dict[str, Any] = {"__name__": "quickstart"}
    source = (ROOT / "examples" / "quickstart.py").read_text()
    exec(compile(source, "quickstart.py", "exec"), namespace)
    run(namespace["main"])
    out = capsys.readouterr().out
    assert out.count("->") == 6
    assert "retry: attempt 1 failed" in out
    assert "timeout: no answer" in out
