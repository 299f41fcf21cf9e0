"""Finding each node's best number of requests in flight while the job runs.

Servers differ: llama.cpp with parallel slots gains from concurrency, a CPU ts_server may
not, and an overloaded node gets slower with more. :class:`ConcurrencyTuner` climbs one step
at a time: it measures a node's throughput (output tokens per second, or answers per second
when a node reports no token counts) over a window of answers at its current limit, moves up
while the next level is better or unexplored, and steps back down when the level below was
better. Known levels are re-measured now and then, since a node's speed changes with load.

Pure: the engine feeds it answers and reads back the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_GAIN = 1.03  # a level must beat its neighbour by 3 % to count as better (noise margin)
_REEXPLORE = 8  # windows at one level before the level above is measured again


@dataclass
class ConcurrencyTuner:
    """Hill-climbing search for the in-flight count that maximises one node's throughput.

    Args:
        ceiling: the highest limit it may choose.
        limit: the starting limit.
    """

    ceiling: int
    limit: int = 1
    rates: dict[int, float] = field(default_factory=dict)
    _window_start: float | None = None
    _window_work: float = 0.0
    _window_done: int = 0
    _windows_here: int = 0

    def window_size(self) -> int:
        """Answers per measurement: enough to see a level's steady state."""
        return 3 * self.limit + 3

    def observe(self, now: float, work: float, *, saturated: bool) -> int:
        """Record one answer (``work``: its output tokens, or 1) and return the new limit.

        ``saturated`` says whether there was more work waiting; windows measured while the
        node was starved say nothing about its capacity and are dropped.
        """
        if not saturated:
            self._reset(now)
            return self.limit
        if self._window_start is None:
            self._window_start = now
            return self.limit
        self._window_work += work
        self._window_done += 1
        if self._window_done < self.window_size() or now <= self._window_start:
            return self.limit
        rate = self._window_work / (now - self._window_start)
        old = self.rates.get(self.limit)
        self.rates[self.limit] = rate if old is None else 0.5 * (old + rate)
        self._decide()
        self._reset(now)
        return self.limit

    def _decide(self) -> None:
        here = self.rates[self.limit]
        below = self.rates.get(self.limit - 1)
        above = self.rates.get(self.limit + 1)
        self._windows_here += 1
        if self._windows_here >= _REEXPLORE and above is not None:
            del self.rates[self.limit + 1]
            above = None
        if below is not None and here <= below * _GAIN:
            self._move(self.limit - 1)  # not clearly better than one fewer: prefer fewer
        elif self.limit < self.ceiling and (above is None or above > here * _GAIN):
            self._move(self.limit + 1)

    def _move(self, limit: int) -> None:
        self.limit = max(1, min(self.ceiling, limit))
        self._windows_here = 0

    def _reset(self, now: float) -> None:
        self._window_start = now
        self._window_work = 0.0
        self._window_done = 0
