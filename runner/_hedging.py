"""Which running item an idle node should also run near the end of a job (a *hedge*).

When no fresh or retried work is left, a free node may take a copy of an item still running
on another node; the first accepted answer wins and the other request is cancelled. The
copy is worth it when this node would likely finish before the other one: the item's
expected remaining time there (its node's smoothed latency minus the time already spent,
or the time spent if the item is overdue — the node may be hung) must beat this node's own
latency by a margin of 25 %. Pure: the engine passes what it knows.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ._nodes import NodeState

MARGIN = 1.25  # a hedge must be expected to beat the running copy by 25 % of its latency


class Running(Protocol):
    """An item in flight, as the hedging decision sees it."""

    @property
    def running(self) -> Mapping[str, tuple[object, float]]: ...  # node → (scope, sent at)

    @property
    def avoid(self) -> Collection[str]: ...  # nodes that failed it


T = TypeVar("T", bound=Running)


@dataclass
class Ranking(Generic[T]):
    """The items in flight worth copying, best first, as measured at one moment.

    Every candidate runs on exactly one node; ``remaining`` is its expected time left
    there. The order does not depend on the node asking (the gain of a copy is the item's
    remaining time minus the asking node's own latency), so one ranking serves every idle
    node until the engine measures again: a pick costs O(1), not a scan of everything in
    flight.
    """

    entries: list[tuple[float, T]]  # (remaining seconds, item), most remaining first
    typical: float | None  # the median node latency, for nodes not measured yet
    start: int = 0  # entries before it have gained a copy or ended: no node can take them

    def worth_copying(self, fastest: float | None) -> int:
        """How many candidates not passed over yet a node of latency ``fastest`` would
        finish sooner (some may have gained a copy since): the copies left to make."""
        if fastest is None:
            return 0
        # The entries' remaining times fall: count those above the threshold.
        end = bisect.bisect_left(
            self.entries, -MARGIN * fastest, lo=self.start, key=lambda entry: -entry[0]
        )
        return end - self.start


def rank(nodes: Mapping[str, NodeState], in_flight: Iterable[T], now: float) -> Ranking[T]:
    """Rank the items in flight that run on one node only by their expected time left."""
    known = [n.latency_ewma for n in nodes.values() if n.latency_ewma is not None]
    typical = statistics.median(known) if known else None
    entries: list[tuple[float, T]] = []
    for task in in_flight:
        if len(task.running) != 1:
            continue
        (other_name, (_, started)) = next(iter(task.running.items()))
        other = nodes[other_name].latency_ewma
        elapsed = now - started
        if other is None:
            if typical is None:
                continue
            other = 4 * typical  # an unmeasured node: assume it is slow
        remaining = other - elapsed
        if remaining <= 0:  # overdue: it may be hung; the node's own estimate is stale
            remaining = elapsed
        entries.append((remaining, task))
    entries.sort(key=lambda entry: entry[0], reverse=True)
    return Ranking(entries, typical)


def pick(node: NodeState, ranking: Ranking[T]) -> T | None:
    """The ranked item ``node`` would most likely finish sooner than its node, if any.
    Items that gained a copy or ended since the ranking was made are passed over."""
    mine = node.latency_ewma if node.latency_ewma is not None else ranking.typical
    if mine is None:
        return None
    entries = ranking.entries
    while ranking.start < len(entries) and len(entries[ranking.start][1].running) != 1:
        ranking.start += 1
    for index in range(ranking.start, len(entries)):
        remaining, task = entries[index]
        if remaining - MARGIN * mine <= 0:
            return None  # ranked by remaining time: no later item gains more
        if len(task.running) != 1 or node.name in task.running or node.name in task.avoid:
            continue
        return task
    return None


def hedge_candidate(
    node: NodeState, nodes: Mapping[str, NodeState], in_flight: Iterable[T], now: float
) -> T | None:
    """The item in flight that ``node`` would most likely finish sooner, if any."""
    return pick(node, rank(nodes, in_flight, now))
