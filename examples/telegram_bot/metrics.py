"""``/metrics`` (Prometheus text) and ``/health`` (JSON), served when ``METRICS_PORT`` is set."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import anyio
from aiohttp import web

from resilient import Policy

from .stats import BotStats

__all__ = ["health", "serve_metrics"]


def _breakers(policies: Iterable[Policy]) -> dict[str, str]:
    states: dict[str, str] = {}
    for policy in policies:
        state = getattr(policy, "state", None)
        if state is not None:
            states[policy.name] = str(getattr(state, "name", state)).lower()
    return states


def health(stats: BotStats, breakers: Iterable[Policy]) -> dict[str, Any]:
    """``ok`` while no breaker is open; ``degraded`` otherwise (the bot still answers)."""
    states = _breakers(breakers)
    degraded = any(s in ("open", "forced_open") for s in states.values())
    return {
        "status": "degraded" if degraded else "ok",
        "breakers": states,
        "messages_in": stats.messages_in,
        "replies_out": stats.replies_out,
    }


async def serve_metrics(
    port: int, stats: BotStats, breakers: Iterable[Policy], host: str = "0.0.0.0"
) -> None:
    """Serve until cancelled."""
    breakers = tuple(breakers)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=stats.prometheus_text(), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(health(stats, breakers)), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
