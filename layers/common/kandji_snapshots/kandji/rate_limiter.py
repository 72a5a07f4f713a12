"""One pace for every worker: the tenant's rate limit is shared, so is the limiter."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kandji_snapshots.errors import RateLimitExhausted


class RateLimiter:
    """Spaces request starts at least `1 / per_second` apart across all threads.

    Starts spaced evenly never exceed `per_second` in any one-second window (a
    token bucket with a burst would). A 429 or an exhausted per-second header
    calls `pause()`, which holds every worker, including those already waiting
    for a slot: they re-check the pause before they send.
    """

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.per_second = per_second
        # A hair over 1/rate so float rounding can never fit one extra start into a second.
        self._interval = 1.000001 / per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._paused_until = 0.0

    def acquire(self, deadline: float | None = None) -> float:
        """Block until this caller may send; returns the granted start time."""
        while True:
            with self._lock:
                now = self._clock()
                start = max(now, self._next_start, self._paused_until)
                if deadline is not None and start > deadline:
                    raise RateLimitExhausted(
                        "The run ran out of time waiting for the Kandji API rate limit; nothing was "
                        "committed. Lower the fleet's load on the API (other integrations share the "
                        "tenant's 10,000 requests/hour) or give the collector a request budget."
                    )
                self._next_start = start + self._interval
            if start > now:
                self._sleep(start - now)
            with self._lock:
                if self._paused_until <= self._clock():
                    return start
            # A pause began while we waited: take a fresh slot after it.

    def pause(self, seconds: float) -> None:
        """Hold every worker for `seconds` (after a 429, for example)."""
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            if until > self._paused_until:
                self._paused_until = until
                self._next_start = max(self._next_start, until)

    @property
    def paused_until(self) -> float:
        return self._paused_until
