"""The bot's HTTP servers (aiohttp): the webhook, ``/metrics`` and ``/health``.

Each is a list of routes; :func:`serve` runs some of them on one host and
port until cancelled. When the webhook and the metrics use the same port,
the composition root hands both lists to one server.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.abc
from aiohttp import web

__all__ = ["serve"]


async def serve(
    host: str,
    port: int,
    routes: Sequence[web.RouteDef],
    *,
    client_max_size: int = 1024**2,
    shutdown_timeout: float = 5.0,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` on ``host:port`` until cancelled; report the bound port when
    listening (``port=0`` takes a free one). ``client_max_size``: largest request
    body in bytes (default 1 MiB; an update is a few KiB). ``shutdown_timeout``:
    seconds requests still being handled get to finish when the server stops;
    then they are cut off (a webhook update cut off is delivered again by
    Telegram), so a stop never waits on a hung dependency."""
    app = web.Application(client_max_size=client_max_size)
    app.add_routes(routes)
    # No handler_cancellation: when Telegram hangs up on a slow webhook call,
    # the update is still handled to the end (its redelivery is then a duplicate,
    # found in the outbox) rather than cut off halfway.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        task_status.started(int(bound))
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
