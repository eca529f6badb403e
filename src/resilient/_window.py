"""Sliding windows of call outcomes for the circuit breaker.

A window answers three numbers at any time: ``calls``, ``failed`` and
``slow`` (running totals, plain attributes), and takes one more outcome with
``record(failed, slow, now)``. Both kinds cost O(1) per record and per
evaluation, whatever their size, and their memory is fixed at construction:
it never grows with traffic.

The objects a user passes (``window=CountWindow(100)``) are specifications:
each breaker works on its own :meth:`~CountWindow.fresh` copy, so one window
object (such as the default argument) can configure any number of breakers.
"""

from __future__ import annotations

import math
from array import array
from typing import final

from ._validate import check_int, check_seconds

__all__ = ["CountWindow", "TimeWindow", "Window"]

# A TimeWindow keeps ceil(seconds / bucket) + 1 buckets; beyond this many, the
# configuration is a mistake (a day in millisecond buckets), not a window.
_MAX_BUCKETS = 100_000
# A CountWindow slot that holds no outcome yet.
_EMPTY_SLOT = b"\x04"
# Below any bucket index a clock can produce: an empty TimeWindow's head.
_NO_BUCKET = -(2**63)


@final
class CountWindow:
    """The last ``size`` calls (default 100): a ring buffer with running totals.

    Algorithm: a ``bytearray`` of ``size`` outcome codes (bit 0 failed, bit 1
    slow; 4 for a slot never written) and a write position. Recording a call
    overwrites the oldest code, first subtracting it from the totals.

    Cost: ``record`` is O(1) (a few integer operations; a success replacing a
    success touches no total); reading ``calls``, ``failed`` and ``slow`` is
    O(1); memory is ``size`` bytes plus a small fixed object. The breaker's
    ``minimum_calls`` is capped at ``size``, as a full ring is all the
    evidence this window can hold.
    """

    __slots__ = ("_pos", "_ring", "calls", "failed", "size", "slow")

    def __init__(self, size: int = 100) -> None:
        self.size = check_int("CountWindow", "size", size, minimum=1)
        self._ring = bytearray(_EMPTY_SLOT * size)
        self._pos = 0
        self.calls = 0
        self.failed = 0
        self.slow = 0

    @property
    def capacity(self) -> int | None:
        """The most calls this window can hold (``size``)."""
        return self.size

    def fresh(self) -> CountWindow:
        """A new, empty window of the same size."""
        return CountWindow(self.size)

    def record(self, failed: bool, slow: bool, now: float | None) -> bool:
        """Add one outcome (``now`` is not needed here).

        Returns whether a rate may have risen: only a failed or slow outcome
        can raise one in a count window (evicting an outcome only lowers them,
        and a growing window is the caller's to check against its minimum).
        """
        ring = self._ring
        pos = self._pos
        old = ring[pos]
        if old:  # evict the outcome in this slot, or fill a slot never written
            if old == 4:
                self.calls += 1
            else:
                if old & 1:
                    self.failed -= 1
                if old & 2:
                    self.slow -= 1
        following = pos + 1
        self._pos = 0 if following == self.size else following
        if failed or slow:
            code = 0
            if failed:
                self.failed += 1
                code = 1
            if slow:
                self.slow += 1
                code |= 2
            ring[pos] = code
            return True
        if old:
            ring[pos] = 0
        return False

    def successes_ahead(self, limit: int = 64) -> int:
        """How many of the next slots to be written (up to ``limit``) hold a success.

        Recording a success over one of them changes no total, only the write
        position: the breaker's fast path takes that many without recording.
        """
        ahead = self._ring[self._pos : self._pos + limit]
        return len(ahead) - len(ahead.lstrip(b"\0"))

    def advance(self, n: int) -> None:
        """Move the write position ``n`` slots on, as ``n`` successes over successes would."""
        self._pos = (self._pos + n) % self.size

    def expire(self, now: float) -> None:
        """Nothing expires in a count window."""

    def clear(self) -> None:
        """Forget every outcome."""
        self._ring = bytearray(_EMPTY_SLOT * self.size)
        self._pos = self.calls = self.failed = self.slow = 0

    def __repr__(self) -> str:
        return f"CountWindow({self.size})"


@final
class TimeWindow:
    """Calls of the last ``seconds``, in buckets of ``bucket`` seconds (default 1.0).

    Algorithm: time is cut into buckets ``i`` covering ``[i*bucket,
    (i+1)*bucket)`` on the loop clock; an outcome goes into the bucket of the
    time its call ended. A ring of ``ceil(seconds / bucket) + 1`` buckets
    holds the per-bucket counts, and ``calls``, ``failed`` and ``slow`` are
    running totals over the live buckets. Bucket ``i`` expires once
    ``now >= (i+1)*bucket + seconds``: all of its outcomes are then at least
    ``seconds`` old. So an outcome counts while it is younger than
    ``seconds``, and is gone once it is ``seconds + bucket`` old.

    The current bucket is not stored while it fills: recording only bumps
    the totals. When the clock passes the next bucket boundary or the next
    expiry (one float comparison per record tells), the current bucket's
    counts are written into the ring as totals minus the older buckets,
    expired buckets are subtracted from the totals, and the totals stay exact.

    Cost: ``record`` is O(1), usually one comparison and up to three
    increments; reading the totals is O(1); a roll to a later bucket expires
    at most one lap of the ring, so an idle gap of any length costs
    O(buckets), never O(seconds idle). Memory: 12 bytes per bucket (three
    ``array('I')``) plus a small fixed object, never growing with traffic.
    """

    __slots__ = (
        "_base_calls",
        "_base_failed",
        "_base_slow",
        "_calls",
        "_dropped",
        "_failed",
        "_head",
        "_next",
        "_slow",
        "_tail",
        "bucket",
        "calls",
        "failed",
        "seconds",
        "slow",
    )

    def __init__(self, seconds: float, bucket: float = 1.0) -> None:
        self.seconds = check_seconds("TimeWindow", "seconds", seconds)
        self.bucket = check_seconds("TimeWindow", "bucket", bucket)
        if self.bucket > self.seconds:
            raise ValueError(f"TimeWindow: bucket must be <= seconds ({seconds!r}), got {bucket!r}")
        n = math.ceil(self.seconds / self.bucket) + 1
        if n > _MAX_BUCKETS:
            raise ValueError(
                f"TimeWindow: seconds / bucket must be < {_MAX_BUCKETS}, "
                f"got {seconds!r} / {bucket!r}"
            )
        zeros = bytes(4 * n)
        self._calls = array("I", zeros)
        self._failed = array("I", zeros)
        self._slow = array("I", zeros)
        self.calls = self.failed = self.slow = 0
        # The older live buckets' sums; the current bucket holds totals - base.
        self._base_calls = self._base_failed = self._base_slow = 0
        # Live buckets are tail..head, head the one filling (tail > head: none).
        self._head = _NO_BUCKET
        self._tail = 0
        self._next = -math.inf  # the clock reading at which the next roll is due
        self._dropped = False  # expiry removed outcomes since the last record

    @property
    def capacity(self) -> int | None:
        """No fixed count of calls: ``None``."""
        return None

    def fresh(self) -> TimeWindow:
        """A new, empty window of the same span and bucket."""
        return TimeWindow(self.seconds, self.bucket)

    def record(self, failed: bool, slow: bool, now: float | None) -> bool:
        """Add one outcome of a call that ended at ``now`` (the loop clock).

        Returns whether a rate may have risen since the previous record: a
        failed or slow outcome was added, or expiry dropped outcomes (which
        can leave the failures behind). A growing window is the caller's to
        check against its minimum.
        """
        if now is None or now >= self._next:
            self._roll(now)
        self.calls += 1
        if failed or slow:
            if failed:
                self.failed += 1
            if slow:
                self.slow += 1
            return True
        if self._dropped:
            self._dropped = False
            return True
        return False

    def expire(self, now: float) -> None:
        """Drop the buckets that have expired at ``now``."""
        if now >= self._next:
            self._roll(now)

    def _roll(self, now: float | None) -> None:
        if now is None:  # pragma: no cover - the breaker always passes the time
            raise TypeError("TimeWindow.record needs the loop clock")
        b = self.bucket
        w = self.seconds
        n = len(self._calls)
        head = self._head
        tail = self._tail
        current = int(now // b)
        if current > head:
            if tail <= head:
                # Close the bucket that was filling: its counts go into the ring.
                slot = head % n
                self._calls[slot] = c = self.calls - self._base_calls
                self._failed[slot] = f = self.failed - self._base_failed
                self._slow[slot] = s = self.slow - self._base_slow
                self._base_calls += c
                self._base_failed += f
                self._base_slow += s
            else:  # nothing live: the window starts over at this bucket
                tail = current
            self._head = head = current
        # Expire stored buckets, oldest first. Once no stored bucket holds a
        # call, the rest (an idle gap) are empty and skipped in one step, so
        # this loop visits at most one lap of the ring.
        while tail < head:
            if self._base_calls == 0:
                tail = head
                break
            if now < (tail + 1) * b + w:
                break
            slot = tail % n
            c, f, s = self._calls[slot], self._failed[slot], self._slow[slot]
            self.calls -= c
            self.failed -= f
            self.slow -= s
            self._base_calls -= c
            self._base_failed -= f
            self._base_slow -= s
            self._calls[slot] = self._failed[slot] = self._slow[slot] = 0
            if c:
                self._dropped = True
            tail += 1
        self._tail = tail
        # Next roll: when the filling bucket closes, or the oldest stored one expires.
        nxt = (head + 1) * b
        if tail < head:
            nxt = min(nxt, (tail + 1) * b + w)
        self._next = nxt

    def clear(self) -> None:
        """Forget every outcome."""
        fresh = self.fresh()
        self._calls, self._failed, self._slow = fresh._calls, fresh._failed, fresh._slow
        self.calls = self.failed = self.slow = 0
        self._base_calls = self._base_failed = self._base_slow = 0
        self._head = _NO_BUCKET
        self._tail = 0
        self._next = -math.inf
        self._dropped = False

    def __repr__(self) -> str:
        return f"TimeWindow({self.seconds!r}, bucket={self.bucket!r})"


Window = CountWindow | TimeWindow
