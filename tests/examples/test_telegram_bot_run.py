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
from examples.telegram_bot.emulators import ServerError
from examples.telegram_bot.redact import MASK


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
    assert TOKEN not in log
    assert "bot_replies_out_total 2.0" in metrics
    assert 'resilient_calls_total{kind="circuit_breaker",name="llm-primary",outcome="success"}' in (
        metrics
    )
    assert health["status"] == "ok"
    assert health["breakers"]["llm-primary"] == "closed"
    assert llm.requests[-1].history[0] == {"role": "user", "content": "note: sow basil"}


@pytest.mark.asyncio
async def test_run_command_in_webhook_mode_answers_and_never_logs_its_secrets(
    tmp_path: Path,
) -> None:
    """`run` with BOT_MODE=webhook (and a BOT_CONFIG file) registers its webhook with the
    secret, answers what Telegram posts to it, serves /health on the same port; when a
    reply fails with an error page that names the request path, the warning it logs has
    the token masked, and neither the token nor the secret is anywhere on stderr."""
    port = free_port()
    secret = "run-test-webhook-secret"
    config = tmp_path / "bot.toml"
    config.write_text("[timings]\nsend_backoff_initial = 0.01\nsend_backoff_max = 0.02\n")
    async with emulators() as (api, llm):
        api.webhook_retry_after = 0.1
        env = os.environ | {
            "BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": api.url,
            "LLM_BASE_URL": llm.url,
            "LLM_API_KEY": "test",
            "LLM_PRIMARY_MODEL": PRIMARY,
            "STATE_STORE_URL": f"sqlite:///{tmp_path / 'run.db'}",
            "BOT_CONFIG": str(config),
            "BOT_MODE": "webhook",
            "WEBHOOK_SECRET": secret,
            "WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
            "WEBHOOK_HOST": "127.0.0.1",
            "WEBHOOK_PORT": str(port),
            "WEBHOOK_PATH": "/hook",
            "METRICS_PORT": str(port),
        }
        api.inject("sendMessage", *[ServerError(502, json=False)] * 5)
        cmd = [sys.executable, "-m", "examples.telegram_bot", "run"]
        async with await anyio.open_process(cmd, env=env, cwd=ROOT) as proc:
            try:
                reply = await api.say(95, "note: sow basil", timeout=20.0)
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{port}/health") as resp,
                ):
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
    assert reply == "Noted: sow basil (note 1)."
    assert api.webhook is not None
    assert (api.webhook.url, api.webhook.secret) == (f"http://127.0.0.1:{port}/hook", secret)
    assert [d.status for d in api.delivered(api.received[0].update_id)][-1] == 200
    assert (health["status"], health["mode"]) == ("ok", "webhook")
    assert f"Bad Gateway: /bot{MASK}/sendMessage" in log
    assert TOKEN not in log
    assert secret not in log
