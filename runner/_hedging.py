"""Which running item an idle node should also run near the end of a job (a *hedge*).

When no fresh or retried work is left, a free node may take a copy of an item still running
on another node; the first accepted answer wins and the other request is cancelled. The
copy is worth it when this node would likely finish before the other one: the item's
expected remaining time there (its node's smoothed latency minus the time already spent,
or the time spent if the item is overdue — the node may be hung) must beat this node's own
latency by a margin of 25 %. Pure: the engine passes what it knows.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable, Mapping
from typing import Protocol, TypeVar

from ._nodes import NodeState

MARGIN = 1.25  # a hedge must be expected to beat the running copy by 25 % of its latency


class Running(Protocol):
    """An item in flight, as the hedging decision sees it."""

    @property
    def running(self) -> Mapping[str, tuple[object, float]]: ...  # node → (scope, sent at)

    @property
    def avoid(self) -> Collection[str]: ...  # nodes that failed it


T = TypeVar("T", bound=Running)


def hedge_candidate(
    node: NodeState, nodes: Mapping[str, NodeState], in_flight: Iterable[T], now: float
) -> T | None:
    """The item in flight that ``node`` would most likely finish sooner, if any."""
    known = [n.latency_ewma for n in nodes.values() if n.latency_ewma is not None]
    typical = statistics.median(known) if known else None
    mine = node.latency_ewma if node.latency_ewma is not None else typical
    if mine is None:
        return None
    best: T | None = None
    best_gain = 0.0
    for task in in_flight:
        if len(task.running) != 1 or node.name in task.running or node.name in task.avoid:
            continue
        (other_name, (_, started)) = next(iter(task.running.items()))
        other = nodes[other_name]
        expected = other.latency_ewma if other.latency_ewma is not None else 4 * mine
        remaining = expected - (now - started)
        if remaining <= 0:  # overdue: it may be hung; the node's own estimate is stale
            remaining = now - started
        gain = remaining - MARGIN * mine
        if gain > best_gain:
            best, best_gain = task, gain
    return best
