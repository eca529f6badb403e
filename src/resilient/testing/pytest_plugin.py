"""The ``resilient`` pytest plugin (entry point ``pytest11``).

It does nothing unless a test asks for one of its fixtures or markers.
"""

from __future__ import annotations
