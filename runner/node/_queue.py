"""Turn-taking for one model: one request runs, a bounded number wait, in arrival order.

A llama.cpp context serves one request at a time. :class:`Turns` hands the model to waiting
requests strictly first-come first-served (the turn passes directly from the request that
releases it to the oldest waiter, so a newcomer can never jump the queue) and refuses a
request outright with :class:`QueueFull` when ``max_waiting`` are already waiting.

This runs on the server's asyncio event loop (uvicorn); the generation itself runs on the
model's own thread, see ``_engine.py``.
"""

from __future__ import annotations

import asyncio
from collections import deque


class QueueFull(Exception):
    """Raised by :meth:`Turns.acquire` when the model is busy and the queue is full."""


class Turn:
    """The right to use the model, held by one request until :meth:`release`.

    Releasing twice is harmless, so a response can release in every exit path.
    """

    def __init__(self, owner: Turns) -> None:
        self._owner: Turns | None = owner

    def release(self) -> None:
        """Give the model to the next waiting request (or leave it idle)."""
        if self._owner is not None:
            owner, self._owner = self._owner, None
            owner._pass_on()


class Turns:
    """The queue in front of one model.

    Args:
        max_waiting: how many requests may wait while one runs; 0 means none may wait.
    """

    def __init__(self, max_waiting: int) -> None:
        self._max_waiting = max_waiting
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._busy = False

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn (not counting the one running)."""
        return len(self._waiters)

    @property
    def busy(self) -> bool:
        """A request holds the model."""
        return self._busy

    async def acquire(self) -> Turn:
        """Wait for the model, in arrival order.

        Raises:
            QueueFull: the model is busy and ``max_waiting`` requests already wait.
        """
        if not self._busy:
            self._busy = True
            return Turn(self)
        if len(self._waiters) >= self._max_waiting:
            raise QueueFull(f"{len(self._waiters)} requests already waiting")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._pass_on()  # the turn was handed over just as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        return Turn(self)

    def _pass_on(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # _busy stays True: the turn moves to the waiter
                return
        self._busy = False
