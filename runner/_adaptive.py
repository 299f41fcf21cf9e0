"""Finding each node's best number of requests in flight while the job runs.

Servers differ: llama.cpp with parallel slots gains from concurrency, a CPU ts_server may
not, and an overloaded node gets slower with more. :class:`ConcurrencyTuner` measures a
node's throughput at its current limit and moves the limit:

* **Measure.** Each answer tells the speed of its own request. With ``L`` requests in
  flight the node's throughput is about ``L × Σ tokens / Σ latency`` (answers instead of
  tokens when a node reports no token counts) — far steadier than counting answers per
  second, since answer lengths vary. Only answers to requests sent with the node full at
  the current level, while more work was waiting, are counted; a window is ``L`` answers
  while climbing and ``max(10, 2L)`` once the search turns, and every window at a level
  adds to that level's figure.
* **Climb.** Starting at 1, the limit doubles while the highest level measured is also the
  best (TCP's slow start), so a node that wants 8 gets there in three windows. A node that
  says how many sequences it runs at once starts there instead, and the search halves
  downwards from it as it would double upwards.
* **Refine.** Once a level is worse than one below it, the limit visits the midpoints of
  the gaps around the best level until its neighbours are measured (a binary search). The
  gap below is skipped when throughput grew in proportion across it (nothing in between
  can do better).
* **Settle.** The best level is the smallest whose throughput is within ``GAIN`` of the
  highest seen: more requests in flight that buy nothing only add latency. Every
  ``REMEASURE`` windows the neighbours of the chosen level are forgotten and measured
  again, since a node's speed changes with load.

Pure: the engine feeds it answers and reads back the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GAIN = 1.05  # a level must beat a smaller one by 5 % to be worth its extra requests
REMEASURE = 30  # windows at a settled level before its neighbours are measured again


@dataclass
class ConcurrencyTuner:
    """Search for the in-flight count that maximises one node's throughput.

    Args:
        ceiling: the highest limit it may choose.
        limit: the starting limit.
    """

    ceiling: int
    limit: int = 1
    rates: dict[int, float] = field(default_factory=dict)
    _since: float = float("-inf")  # when the current limit took effect
    _totals: dict[int, tuple[float, float]] = field(default_factory=dict)  # work, latency
    _work: float = 0.0  # output tokens of the window's answers
    _busy: float = 0.0  # summed latencies of the window's answers
    _answers: int = 0
    _windows_here: int = 0

    def window_size(self) -> int:
        """Answers per measurement: ``L`` while climbing (a round of requests), ``2L`` but at
        least 10 once the search turns (a steadier figure where the choice is close)."""
        climbing = all(level < self.limit for level in self.rates)
        return self.limit if climbing else max(10, 2 * self.limit)

    def observe(
        self, now: float, work: float, *, latency: float, in_flight: int, saturated: bool
    ) -> int:
        """Record one answer and return the limit to use from now on.

        Args:
            now: when the answer arrived.
            work: its output tokens (or 1).
            latency: seconds from sending the request to the answer.
            in_flight: requests in flight on the node when it was sent, itself included.
            saturated: whether more work was waiting; answers from a starved node say
                nothing about its capacity and are dropped with their window.
        """
        if not saturated:
            self._clear()
            return self.limit
        if now - latency < self._since or latency <= 0:
            return self.limit  # sent under another limit
        if in_flight != self.limit:
            # Sent while the node was still filling up to the new level (or into the place
            # of the answer that moved the limit): on a queueing node it skipped part of
            # the queue that the new level builds, so its speed is not the level's.
            return self.limit
        self._work += work
        self._busy += latency
        self._answers += 1
        if self._answers < self.window_size():
            return self.limit
        work, busy = self._totals.get(self.limit, (0.0, 0.0))
        work, busy = work + self._work, busy + self._busy  # every window at this level
        self._totals[self.limit] = (work, busy)
        self.rates[self.limit] = self.limit * work / busy
        self._clear()
        self._move(self._next_level(), now)
        return self.limit

    def best(self) -> int:
        """The smallest measured level within ``GAIN`` of the highest throughput."""
        top = max(self.rates.values())
        return min(level for level, rate in self.rates.items() if rate * GAIN >= top)

    def _next_level(self) -> int:
        best = self.best()
        levels = sorted(self.rates)
        above = [level for level in levels if level > best]
        below = [level for level in levels if level < best]
        if not above:
            if best < self.ceiling:
                return min(self.ceiling, 2 * best)  # still rising: double
        elif above[0] - best > 1:
            return (best + above[0]) // 2
        if below and best - below[-1] > 1 and not self._scaled(below[-1], best):
            return (best + below[-1] + 1) // 2
        if best > 1 and not below:
            return best // 2  # started high (at the node's slots): search downwards too
        if self.limit == best:
            self._windows_here += 1
            if self._windows_here >= REMEASURE:  # forget the neighbours: measure them again
                self._windows_here = 0
                for level in (best - 1, best + 1):
                    self.rates.pop(level, None)
                    self._totals.pop(level, None)
        return best

    def _scaled(self, low: int, high: int) -> bool:
        """Whether throughput grew about in proportion from ``low`` to ``high`` in flight:
        then no level between them can beat ``high``."""
        return self.rates[high] * GAIN >= self.rates[low] * high / low

    def _clear(self) -> None:
        self._work = self._busy = 0.0
        self._answers = 0

    def _move(self, limit: int, now: float) -> None:
        limit = max(1, min(self.ceiling, limit))
        if limit != self.limit:
            self.limit = limit
            self._since = now
            self._windows_here = 0
