"""Counters of the real-time path, kept as plain numbers so that counting costs an increment.

The hub owns one `Meter` per application; the listener, the sessions and the sender tasks bump
it, and `metrics.py` turns it into Prometheus samples when /metrics is scraped. No locks: all
of it runs on the event loop's thread.
"""

from __future__ import annotations

import time
from bisect import bisect_left

# Upper bounds, in seconds, of the notification-to-send latency histogram.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Upper bounds of the histogram of bursts (alerts written to more than one slice of sockets).
BURST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
# Receipt times kept for alerts not yet sent everywhere; ids grow, so the oldest go first. An
# alert still unsent after this many newer ones is simply not measured.
NOTIFIED_KEPT = 4096


class Meter:
    __slots__ = (
        "_notified",
        "beside_counts",
        "beside_sum",
        "burst_counts",
        "burst_sum",
        "dropped_slow",
        "frames_sent",
        "latency_counts",
        "latency_sum",
    )

    def __init__(self) -> None:
        self.frames_sent = 0
        self.dropped_slow = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        # The same, for frames of alerts published while a burst was being written.
        self.beside_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.beside_sum = 0.0
        self.burst_counts = [0] * (len(BURST_BUCKETS) + 1)
        self.burst_sum = 0.0
        self._notified: dict[int, float] = {}

    def notified(self, alert_id: int) -> None:
        """The NOTIFY for `alert_id` arrived now."""
        notified = self._notified
        notified[alert_id] = time.monotonic()
        if len(notified) > NOTIFIED_KEPT:
            del notified[next(iter(notified))]

    def burst_done(self, alert_id: int) -> None:
        """The last slice of a burst of `alert_id` was written (or queued) just now."""
        at = self._notified.get(alert_id)
        if at is not None:
            elapsed = time.monotonic() - at
            self.burst_counts[bisect_left(BURST_BUCKETS, elapsed)] += 1
            self.burst_sum += elapsed

    def sent_backlog(self) -> None:
        """One frame read from the tables (not from a NOTIFY) was written to a socket."""
        self.frames_sent += 1

    def sent_live(self, alert_id: int, count: int, beside_burst: bool = False) -> None:
        """`count` live frames of `alert_id` were written to sockets just now; `beside_burst`:
        it was published while a burst was being written."""
        if not count:
            return
        self.frames_sent += count
        at = self._notified.get(alert_id)
        if at is not None:
            elapsed = time.monotonic() - at
            bucket = bisect_left(LATENCY_BUCKETS, elapsed)
            self.latency_counts[bucket] += count
            self.latency_sum += elapsed * count
            if beside_burst:
                self.beside_counts[bucket] += count
                self.beside_sum += elapsed * count

    def sent(self, alert_id: int) -> None:
        """One live frame of `alert_id` was written to a socket."""
        self.frames_sent += 1
        at = self._notified.get(alert_id)
        if at is not None:
            elapsed = time.monotonic() - at
            self.latency_counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
            self.latency_sum += elapsed
