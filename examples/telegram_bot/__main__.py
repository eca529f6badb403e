"""``python -m examples.telegram_bot run`` (the bot), ``demo`` (the offline demo), or
``demo --load`` (the load test against the emulators)."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import signal
import sys

import anyio

from .config import Settings
from .redact import redact, redacting

log = logging.getLogger("examples.telegram_bot")

MISSING = "error: the bot needs the 'bot' extra ({name} is not installed): pip install -e '.[bot]'"


async def run_bot(settings: Settings) -> None:
    """Poll (or serve the webhook) until SIGTERM or SIGINT, then stop cleanly
    (everything opened is closed)."""
    from .app import open_bot

    async with open_bot(settings) as app, anyio.create_task_group() as tg:
        # Everything imported and built so far lives as long as the process:
        # take it out of the collector's sight. aiogram and pydantic leave ~260,000
        # objects, which a full collection walked in 250 ms (measured), a pause
        # every few seconds under load; after freeze() it walks only new ones.
        gc.collect()
        gc.freeze()
        tg.start_soon(app.run)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("got %s: stopping", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.telegram_bot")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the bot (configured from the environment)")
    sub.add_parser("demo", help="run the offline demo (--load: the load test)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    try:
        from . import app, demo
    except ModuleNotFoundError as exc:
        print(MISSING.format(name=exc.name), file=sys.stderr)
        return 2
    del app
    if args.command == "demo":
        if "--load" in rest:
            from . import load

            return load.main([a for a in rest if a != "--load"])
        return demo.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpx2"):  # a line per LLM request; openai 3 uses httpx2
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # never holds a secret's value (see config.py)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with redacting(settings.secrets()):
        try:
            # uvloop when installed (not a dependency): cheaper I/O callbacks, and the
            # bot is mostly I/O callbacks (see docs/bot-production.md, the load test).
            uvloop = importlib.util.find_spec("uvloop") is not None
            log.info("event loop: %s", "uvloop" if uvloop else "asyncio")
            options = {"use_uvloop": uvloop}
            anyio.run(run_bot, settings, backend="asyncio", backend_options=options)
        except Exception as exc:  # logged, redacted, instead of Python's bare traceback
            log.critical("the bot stopped: %s", redact(f"{type(exc).__name__}: {exc}"))
            log.debug("traceback", exc_info=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
