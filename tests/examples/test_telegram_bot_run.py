"""The ``run`` command as a black box: configured by environment, answers, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from bot_helpers import PRIMARY, ROOT, SECONDARY, TOKEN, emulators


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.asyncio
async def test_run_command_answers_serves_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`python -m examples.telegram_bot run` reads its configuration from the environment,
    answers with history from its store, serves /metrics and /health, and exits 0 on SIGTERM."""
    port = free_port()
    async with emulators() as (api, llm):
        env = os.environ | {
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": api.url,
            "LLM_BASE_URL": llm.url,
            "LLM_API_KEY": "test",
            "LLM_PRIMARY_MODEL": PRIMARY,
            "LLM_SECONDARY_MODEL": SECONDARY,
            "STATE_STORE_URL": f"sqlite:///{tmp_path / 'run.db'}",
            "METRICS_PORT": str(port),
        }
        cmd = [sys.executable, "-m", "examples.telegram_bot", "run"]
        async with await anyio.open_process(cmd, env=env, cwd=ROOT) as proc:
            try:
                assert await api.say(90, "note: sow basil", timeout=20.0) == (
                    "Noted: sow basil (note 1)."
                )
                assert (await api.say(90, "hello bot")).startswith(f"[{PRIMARY}]")
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        metrics = await resp.text()
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        health = json.loads(await resp.text())
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(15):
                    code = await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
            assert proc.stderr is not None
            log = "".join([chunk async for chunk in TextReceiveStream(proc.stderr)])
    assert code == 0, log
    assert "got SIGTERM: stopping" in log
    assert "bot_replies_out_total 2" in metrics
    assert health["status"] == "ok"
    assert health["breakers"]["llm-primary"] == "closed"
    assert llm.requests[-1].history[0] == {"role": "user", "content": "note: sow basil"}
