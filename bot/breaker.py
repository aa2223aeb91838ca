"""A small circuit breaker in front of Redis, one per process.

closed     every call goes through; a Redis error or timeout opens the breaker.
open       calls fail at once (no socket touched) for ``cooldown`` seconds, so a stalled or dead
           Redis costs each message microseconds instead of a timeout per call.
half-open  after the cooldown one caller (the probe) is let through; its success closes the
           breaker, its failure opens it for another cooldown. Other callers still fail fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class StoreUnavailable(Exception):
    """Redis is down, stalled, or known to be (the breaker is open)."""


class Breaker:
    def __init__(self, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.cooldown = cooldown
        self.clock = clock
        self.state = CLOSED
        self.opened_at = 0.0
        self.failures = 0
        self._probing = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """May this caller touch Redis now?"""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self.clock() - self.opened_at >= self.cooldown:
                self.state = HALF_OPEN
                self._probing = False
            if self.state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.state = CLOSED
            self.failures = 0
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            self.state = OPEN
            self.opened_at = self.clock()
            self._probing = False

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"state": self.state, "failures": self.failures}
