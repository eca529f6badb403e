"""Secrets never reach a log line: the bot token, the webhook secret, the LLM key.

The token is in every Bot API URL (``/bot<token>/sendMessage``), and libraries
put URLs in their errors and debug logs (aiohttp's ``ClientResponseError``
carries the request URL), so filtering the bot's own messages is not enough.
:func:`redacting` installs a log record factory: every record created
anywhere in the process, by any logger, has each secret replaced by
``[REDACTED]`` in its message, its arguments, and its exception's and stack's
text, before any handler (a file, stderr, pytest's ``caplog``) sees it.

Errors the bot prints itself go through :func:`redact` too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["MASK", "redact", "redacting"]

MASK = "[REDACTED]"
MIN_SECRET = 6  # shorter "secrets" would mask ordinary words

_lock = threading.Lock()
_secrets: Counter[str] = Counter()  # secret -> how many redacting() blocks hold it
_previous_factory: Any = None


def redact(text: str) -> str:
    """``text`` with every registered secret (and its URL-encoded form) masked."""
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    if not _secrets:
        return
    message = record.getMessage()
    redacted = redact(message)
    if redacted != message or record.args:
        record.msg, record.args = redacted, None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    make = _previous_factory or logging.LogRecord  # None: uninstalled under our feet
    record: logging.LogRecord = make(*args, **kwargs)
    # A message that cannot be formatted is left for logging to report.
    with contextlib.suppress(Exception):
        _redact_record(record)
    return record


def _forms(secret: str) -> set[str]:
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}


@contextmanager
def redacting(secrets: Iterable[str | None]) -> Iterator[None]:
    """Mask ``secrets`` in every log record created while the block runs.

    Blocks nest (two bots in one process, as in the tests); the record
    factory is installed by the first and removed by the last. Empty and
    very short values are ignored.
    """
    global _previous_factory
    mine = [f for s in secrets if s and len(s) >= MIN_SECRET for f in _forms(s)]
    with _lock:
        if not _secrets and _previous_factory is None:
            _previous_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_factory)
        _secrets.update(mine)
    try:
        yield
    finally:
        with _lock:
            _secrets.subtract(mine)
            for key in [k for k, n in _secrets.items() if n <= 0]:
                del _secrets[key]
            if not _secrets and _previous_factory is not None:
                if logging.getLogRecordFactory() is _factory:
                    logging.setLogRecordFactory(_previous_factory)
                _previous_factory = None
