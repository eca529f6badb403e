"""``python -m examples.telegram_bot run`` (the bot) or ``demo`` (the offline demo)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import anyio

from .config import Settings

log = logging.getLogger("examples.telegram_bot")

MISSING = "error: the bot needs the 'bot' extra ({name} is not installed): pip install -e '.[bot]'"


async def run_bot(settings: Settings) -> None:
    """Poll until SIGTERM or SIGINT, then stop cleanly (everything opened is closed)."""
    from .app import open_bot

    async with open_bot(settings) as app, anyio.create_task_group() as tg:
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
    sub.add_parser("demo", help="run the offline demo", add_help=False)
    args, rest = parser.parse_known_args(argv)
    try:
        from . import app, demo
    except ModuleNotFoundError as exc:
        print(MISSING.format(name=exc.name), file=sys.stderr)
        return 2
    del app
    if args.command == "demo":
        return demo.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    anyio.run(run_bot, settings, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
