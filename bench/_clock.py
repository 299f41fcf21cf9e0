"""Simulated time: real seconds scaled, starting at a cluster's first request."""

from __future__ import annotations

import trio


class SimClock:
    """Simulated time shared by a cluster's nodes; it starts at the first request.

    Args:
        time_scale: real seconds per simulated second.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, not {time_scale}")
        self.time_scale = time_scale
        self.started_at: float | None = None  # trio time of simulated second 0
        self._started = trio.Event()

    def start(self) -> None:
        """Start the clock now, unless it already runs."""
        if self.started_at is None:
            self.started_at = trio.current_time()
            self._started.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    def now(self) -> float:
        """Simulated seconds since the clock started (0 before)."""
        if self.started_at is None:
            return 0.0
        return (trio.current_time() - self.started_at) / self.time_scale

    def deadline(self, t: float) -> float:
        """The trio time of simulated second ``t``."""
        self.start()
        assert self.started_at is not None
        return self.started_at + t * self.time_scale

    async def sleep_until(self, t: float) -> None:
        await trio.sleep_until(self.deadline(t))
