"""Admission in front of one model: ``size`` sequences run, ``max_queue`` more may wait.

llama.cpp's server decodes ``size`` sequences at once and queues the rest itself, in
arrival order. :class:`Slots` only bounds how much may be outstanding: a request that
would make more than ``size + max_queue`` sequences outstanding is refused at once (the
node answers 503 with ``Retry-After``), so a burst never builds an unbounded queue. A
request with ``n`` completions takes ``n`` places; one that needs more than the whole
capacity is admitted only when nothing else is outstanding, so it cannot starve.

Pure bookkeeping on the server's event loop: no locks, no I/O.
"""

from __future__ import annotations


class Admission:
    """Places held by one request until :meth:`release` (releasing twice is harmless)."""

    def __init__(self, owner: Slots, places: int) -> None:
        self._owner: Slots | None = owner
        self.places = places

    def release(self) -> None:
        """Give the places back."""
        if self._owner is not None:
            owner, self._owner = self._owner, None
            owner._outstanding -= self.places


class Slots:
    """The admission counter of one model.

    Args:
        size: sequences decoded at once (llama.cpp's ``n_parallel``).
        max_queue: sequences that may wait beyond those; 0 means none may wait.
    """

    def __init__(self, size: int, max_queue: int) -> None:
        if size < 1 or max_queue < 0:
            raise ValueError(f"size must be ≥ 1 and max_queue ≥ 0, got {size}, {max_queue}")
        self.size = size
        self.max_queue = max_queue
        self._outstanding = 0

    @property
    def running(self) -> int:
        """Sequences being decoded now (at most ``size``)."""
        return min(self._outstanding, self.size)

    @property
    def waiting(self) -> int:
        """Sequences admitted but waiting for a free slot."""
        return max(0, self._outstanding - self.size)

    def admit(self, places: int = 1) -> Admission | None:
        """Reserve ``places`` sequences, or None when that would overflow the queue."""
        fits = self._outstanding + places <= self.size + self.max_queue
        if not fits and self._outstanding > 0:
            return None
        self._outstanding += places
        return Admission(self, places)
