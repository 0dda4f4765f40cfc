"""Clocks shared by the simulator and the check under test.

The simulated organization's data depends only on the clock's time, so a test that moves a `Clock`
replays minutes or days of OpenAI's behaviour (buckets opening, growing, settling) in no wall time.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class Clock:
    """A manual clock: time moves only when told to."""

    def __init__(self, start: float):
        self._t = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    __call__ = now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            # The organization's observed values are monotone in time; going back would break that
            # promise for whoever reads them. Use set() to jump deliberately.
            raise ValueError('a Clock only moves forward with advance(); use set() to jump')
        with self._lock:
            self._t += seconds
            return self._t

    def set(self, t: float) -> float:
        with self._lock:
            self._t = float(t)
            return self._t

    def __repr__(self) -> str:
        return f'Clock({self.now()!r})'


class RealClock:
    """Wall-clock time, optionally running `factor` times faster from `start` (for demos).

    Simulated time is `start + (time_fn() - origin) * factor + offset`: at creation it reads `start`
    (default: the wall clock), then moves `factor` simulated seconds per real second.
    """

    def __init__(self, start: float | None = None, factor: float = 1.0, time_fn: Callable[[], float] = time.time):
        if factor <= 0:
            raise ValueError('factor must be positive')
        self._time_fn = time_fn
        self._lock = threading.Lock()
        self.factor = float(factor)
        self._origin = time_fn()
        self._start = self._origin if start is None else float(start)
        self._offset = 0.0

    def now(self) -> float:
        with self._lock:
            return self._start + (self._time_fn() - self._origin) * self.factor + self._offset

    __call__ = now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError('a RealClock only moves forward with advance(); use set() to jump')
        with self._lock:
            self._offset += seconds
        return self.now()

    def set(self, t: float) -> float:
        with self._lock:
            self._origin = self._time_fn()
            self._start = float(t)
            self._offset = 0.0
        return self.now()

    def __repr__(self) -> str:
        return f'RealClock(now={self.now()!r}, factor={self.factor!r})'
