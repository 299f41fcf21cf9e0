"""Whether a node should take one more fresh item near the end of a run (the *tail rule*).

Pull scheduling gives every free slot the next item. Near the end that is a mistake on a
slow node: an item it takes in the last minute may finish long after the fast nodes have
run dry, and the run waits for it, or a hedge runs it twice. So near the end a node takes a
fresh item only if it would finish it about as soon as the faster nodes would anyway: the
admitted nodes, fastest first, take work while::

    latency(node) <= remaining / throughput(this node and the faster ones) + MARGIN * fastest

``remaining / throughput`` is the time those nodes alone need to drain the fresh items left
(``throughput``: the sum of each node's ``limit / latency``, items per second), and
``fastest`` is one item on the fastest node, with the hedging margin. While many items are
left the right side is large and every node takes work; a homogeneous cluster never
declines (every latency is near the fastest). A node declines only while a faster one will
soon be free: the item waits for it. Latencies are the nodes' smoothed seconds per answer;
a node with none measured yet always takes work. Pure: the engine passes what it knows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate

from ._hedging import MARGIN
from ._nodes import Health, NodeState


@dataclass(frozen=True)
class Pace:
    """The admitted nodes' speed, summarised for the tail rule.

    Attributes:
        latencies: the measured latencies, fastest first, seconds.
        throughputs: ``throughputs[k]``: items per second of the ``k + 1`` fastest nodes.
    """

    latencies: tuple[float, ...]
    throughputs: tuple[float, ...]

    @property
    def fastest(self) -> float:
        return self.latencies[0]

    def slowest_taking(self, remaining: int) -> float:
        """The latency of the slowest node that should still take fresh work.

        The nodes that take work are the fastest ``k``, with ``k`` the largest for which
        the ``k``-th node's latency is within the drain time of those ``k`` nodes alone
        (they, not the whole cluster, will do the rest) plus the margin. The test grows
        with ``k`` (latencies rise, drain times fall), so a binary search finds it.
        """
        low, high = 0, len(self.latencies) - 1  # the fastest node always takes work
        slack = MARGIN * self.fastest
        while low < high:
            mid = (low + high + 1) // 2
            if self.latencies[mid] <= remaining / self.throughputs[mid] + slack:
                low = mid
            else:
                high = mid - 1
        return self.latencies[low]


def pace_of(nodes: Iterable[NodeState]) -> Pace | None:
    """The pace of the admitted nodes with a measured latency; ``None`` if none has one."""
    measured = sorted(
        (node.latency_ewma, node.limit)
        for node in nodes
        if node.health is Health.admitted
        and not node.suspect
        and node.latency_ewma
        and node.latency_ewma > 0
    )
    if not measured:
        return None
    throughputs = list(accumulate(limit / latency for latency, limit in measured))
    return Pace(tuple(latency for latency, _ in measured), tuple(throughputs))


def takes_fresh(latency: float | None, remaining: int, pace: Pace | None) -> bool:
    """Whether a node of smoothed ``latency`` should take one of the ``remaining`` fresh
    items (this one included)."""
    if latency is None or pace is None:
        return True
    return latency <= pace.slowest_taking(remaining)
