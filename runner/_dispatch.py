"""What a free slot takes next: the queue of work and the wake-ups of waiting workers.

A :class:`Task` is an item's journey through the engine (its requests, seeds, errors and the
copies running). The :class:`Dispatcher` holds the fresh input, the items waiting for a
retry and the items in flight, and answers a worker's "what next?" in the order the engine
documents (:mod:`runner._engine`): a retry that may run on this node, else a fresh item
unless the tail rule leaves it to a faster node (:mod:`runner._tail`), else near the end a
copy of a straggler (:mod:`runner._hedging`). Workers wait on one event per node: a
request's end wakes its own node's workers; a change every node may act on wakes all.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio

from ._hedging import Ranking, pick, rank
from ._nodes import Health, NodeState
from ._policy import History
from ._tail import Pace, pace_of, takes_fresh
from ._work import Work

PACE_REFRESH = 1.0  # seconds after which the tail rule measures the cluster's pace again


@dataclass(eq=False)
class Task:
    """An item's journey through the engine."""

    work: Work
    node_failures: int = 0  # failures counted against the item
    busy: int = 0  # busy answers not counted as failures (at most settings.busy_retries)
    content_attempts: int = 0  # answers rejected by the acceptor
    requests: int = 0
    seeds: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    avoid: set[str] = field(default_factory=set)
    not_before: float = 0.0
    first_sent: float | None = None
    running: dict[str, tuple[trio.CancelScope, float]] = field(default_factory=dict)
    done: bool = False
    last_text: str | None = None

    @property
    def seed(self) -> int:
        # A request for n answers uses seeds seed .. seed+n-1 (the open node's rule), so a
        # content retry moves on by n: no answer is asked for twice with the same seed.
        step = self.work.request.params.get("n") or 1
        return (self.work.request.seed or 0) + self.content_attempts * step

    def trail(self) -> dict[str, Any]:
        """What the item's record says of its attempts."""
        return {
            "attempts": self.requests,
            "seeds": list(self.seeds),
            "errors": list(self.errors),
            "text": self.last_text,
        }

    def history(self, now: float) -> History:
        """What the failure policy weighs."""
        assert self.first_sent is not None
        return History(
            node_failures=self.node_failures,
            busy=self.busy,
            answers=self.content_attempts,
            elapsed=now - self.first_sent,
        )


class Dispatcher:
    """The run's work queue and its wake-ups (see the module docstring).

    Args:
        nodes: the cluster's nodes (their health, latency and load are read, not changed,
            except the count of copies a node took).
        hedge: whether idle nodes near the end copy stragglers.
        heard: when a node (by name) was last sent a request or sent a byte
            (:attr:`runner._client.NodeClient.heard`); ``None``: never judged (whole
            answers say nothing until they end).
        silence: seconds unheard after which a node with requests in flight may be hung
            (a streaming node sends tokens every fraction of a second): it takes no new
            work until it is heard again, and leaves the tail rule's pace.
    """

    def __init__(
        self,
        nodes: list[NodeState],
        *,
        hedge: bool,
        heard: Callable[[str], float] | None = None,
        silence: float = math.inf,
    ) -> None:
        self.nodes = nodes
        self.hedge = hedge
        self._heard = heard
        self._silence = silence
        self.fresh: Iterator[Work] = iter(())
        self.fresh_done = False
        self.size: Callable[[], int] | None = None  # the input's size, or a bound of it
        self.retry: deque[Task] = deque()
        self.in_flight: set[Task] = set()
        self.wake_all = False  # set when a change concerns every node (see notify)
        self.ended = 0  # requests ended, for the pace's refresh
        self._by_name = {n.name: n for n in nodes}
        self._taken = 0  # fresh items taken from the input
        self._pace: Pace | None = None
        self._pace_at = (-1, float("-inf"))  # (requests ended, time) when it was measured
        # One event per node: a request's end wakes its node's workers, not the cluster's.
        self._changed = {node.name: trio.Event() for node in nodes}
        self._ranking: Ranking[Task] | None = None
        self._ended_told = False  # every worker was woken to see that the work is done
        self._ranking_at = float("-inf")

    def notify(self) -> None:
        """Wake every waiting worker: something any node may act on changed (an item to
        retry, a node benched or back, the end of the work)."""
        for node in self.nodes:
            self.notify_node(node)
        self.wake_all = False

    def notify_node(self, node: NodeState) -> None:
        """Wake the waiting workers of ``node`` alone (one of its slots is free again)."""
        self._changed[node.name].set()
        self._changed[node.name] = trio.Event()

    @property
    def exhausted(self) -> bool:
        """No fresh item, retry or request in flight is left: nothing can come any more."""
        return self.fresh_done and not self.retry and not self.in_flight

    def tell_if_ended(self) -> bool:
        """When the work has ended, wake every worker to see it (some may sleep until a
        cool-down ends), once: not at every end of a request or of a worker, which would
        cost the number of nodes times the number of workers. True if this call told."""
        if self._ended_told or not self.exhausted:
            return False
        self._ended_told = True
        self.notify()
        return True

    def silent(self, node: NodeState, now: float) -> bool:
        """Whether ``node`` has been unheard for so long that it may be hung (``silence``)."""
        return self._heard is not None and now - self._heard(node.name) > self._silence

    def admitted(self) -> list[NodeState]:
        return [n for n in self.nodes if n.health is Health.admitted]

    @property
    def saturated(self) -> bool:
        """Whether work is waiting for a slot (fresh items or retries)."""
        return not self.fresh_done or bool(self.retry)

    async def next_for(self, node: NodeState) -> Task | None:
        """Wait for the next thing ``node`` should do; ``None`` when all work is done."""
        while True:
            changed = self._changed[node.name]
            now = trio.current_time()
            wake_at = float("inf")
            if node.free:
                if node.cooldown_until > now:
                    wake_at = node.cooldown_until
                elif node.active and self.silent(node, now):
                    wake_at = now + PACE_REFRESH  # its bytes wake no one: look again soon
                else:
                    task, wake_at = self._pick(node, now)
                    if task is not None:
                        return task
            if self.exhausted:
                self.tell_if_ended()
                return None
            with trio.move_on_at(wake_at):
                await changed.wait()

    def _pick(self, node: NodeState, now: float) -> tuple[Task | None, float]:
        wake_at = float("inf")
        for task in self.retry:
            if task.not_before > now:
                wake_at = min(wake_at, task.not_before)
                continue
            if node.name in task.avoid and not {n.name for n in self.admitted()} <= task.avoid:
                continue
            self.retry.remove(task)
            return task, wake_at
        if not self.fresh_done:
            if not self._takes_fresh(node, now):
                return None, min(wake_at, now + PACE_REFRESH)  # a faster node will take it
            try:
                work = next(self.fresh)
            except StopIteration:
                self.fresh_done = True
                self.wake_all = True
            else:
                self._taken += 1
                return Task(work), wake_at
        if self.hedge and self.fresh_done and not self.retry:
            # Copies are looked for again every few of the fastest node's latencies, not
            # at every answer: one ranking of what runs serves every idle node meanwhile.
            pace = self._pace_now(now)
            again = min(PACE_REFRESH, pace.fastest / 4) if pace is not None else PACE_REFRESH
            if self._ranking is None or now >= self._ranking_at + again:  # the wake-up's test
                self._ranking = rank(self._by_name, self.in_flight, now)
                self._ranking_at = now
            if not self._hedges(
                node, pace, self._ranking.worth_copying(pace.fastest if pace else None)
            ):
                return None, min(wake_at, now + PACE_REFRESH)
            hedge = pick(node, self._ranking)
            if hedge is not None:
                node.hedges += 1
                return hedge, wake_at
            return None, min(wake_at, self._ranking_at + again)
        return None, wake_at

    @staticmethod
    def _hedges(node: NodeState, pace: Pace | None, candidates: int) -> bool:
        """Whether ``node`` is fast enough to run copies: as fast as the tail rule asks of
        a node taking one of ``candidates`` fresh items. A slower node's copy would not beat
        the original, or would keep a faster node from copying it."""
        return node.latency_ewma is None or takes_fresh(node.latency_ewma, candidates, pace)

    def _takes_fresh(self, node: NodeState, now: float) -> bool:
        if self.size is None or node.latency_ewma is None:
            return True
        return takes_fresh(node.latency_ewma, self.size() - self._taken, self._pace_now(now))

    def _pace_now(self, now: float) -> Pace | None:
        ended, at = self._pace_at
        if self.ended - ended >= max(8, len(self.nodes) // 8) or now - at >= PACE_REFRESH:
            # O(nodes): amortised over nodes/8 requests. A silent node will not answer soon.
            self._pace = pace_of(n for n in self.nodes if not (n.active and self.silent(n, now)))
            self._pace_at = (self.ended, now)
        return self._pace
