"""Test helpers: virtual time for both anyio backends (and, with the pytest
plugin, the ``resilient_clock``, ``faults`` and ``resilient_events`` fixtures)."""

from ._clock import (
    VirtualClock,
    VirtualTimeEventLoop,
    current_clock,
    run,
    virtual_backend_options,
)
from .faults import EventLog, Faults

__all__ = [
    "EventLog",
    "Faults",
    "VirtualClock",
    "VirtualTimeEventLoop",
    "current_clock",
    "run",
    "virtual_backend_options",
]
