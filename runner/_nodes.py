"""Nodes as the engine sees them: where they are, and what it has learnt about them.

:class:`NodeSpec` is configuration (address, slots and where that number came from, key).
:class:`NodeState` is the engine's
running knowledge of one node: how many requests it has in flight, how fast it answers, and
its circuit breaker (admitted, benched after repeated failures, re-admitted after a
successful probe). ``NodeState`` holds no I/O; the engine drives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

from ._report import NodeLine


class SlotsFrom(Enum):
    """Where a node's ``slots`` came from."""

    config = "config"  # set for the node in the cluster config or the inventory
    node = "node"  # the node said how many sequences it runs at once
    default = "default"  # engine.slots: not configured, and the node did not say (yet)


@dataclass(frozen=True)
class NodeSpec:
    """One node of the cluster.

    Attributes:
        name: how the node is called in logs, records and reports (``host:port`` by default).
        base_url: e.g. ``http://10.0.0.5:8088``.
        slots: the most requests the engine keeps in flight on it.
        api_key: its Bearer key, if it needs one (never logged or written).
        slots_from: where ``slots`` came from; only a ``default`` is worth asking the node
            about (:func:`runner._cluster.ask_slots`).
        price_per_hour: what the node costs per hour (≥ 0, in the user's own currency) as
            configured for it; None when not given (and for local nodes).
    """

    name: str
    base_url: str
    slots: int = 1
    api_key: str | None = field(default=None, repr=False)
    slots_from: SlotsFrom = SlotsFrom.config
    price_per_hour: float | None = None

    def for_answers(self, answers: int) -> NodeSpec:
        """This node for requests of ``answers`` completions each (``n``, job.candidates):
        each takes ``answers`` of its slots, so it gets ``slots // answers`` at once (at
        least one); a node asked for more at once refuses them as busy."""
        if answers <= 1:
            return self
        return replace(self, slots=max(1, self.slots // answers))

    def with_node_slots(self, slots: int | None) -> NodeSpec:
        """This node with the slots it reported, unless configured or it said nothing."""
        if self.slots_from is not SlotsFrom.default or slots is None:
            return self
        return replace(self, slots=slots, slots_from=SlotsFrom.node)


class Health(Enum):
    admitted = "admitted"  # takes work
    benched = "benched"  # failed repeatedly; probed until it answers again


@dataclass
class NodeState:
    """What the engine knows about one node while a run goes on."""

    spec: NodeSpec
    limit: int = 0  # requests in flight allowed now
    active: int = 0  # requests in flight now
    health: Health = Health.admitted
    # A request of it timed out while others were in flight: it takes no new work until one
    # of them answers (a hung node would swallow each new request for a whole timeout).
    suspect: bool = False
    consecutive_failures: int = 0
    cooldown_until: float = 0.0  # the last admitted node backs off instead of being benched
    requests: int = 0
    successes: int = 0
    errors: int = 0
    hedges: int = 0  # duplicates of slow items sent here
    busy: int = 0  # requests it refused as busy (503/429 with Retry-After); not errors
    output_tokens: int = 0
    busy_time: float = 0.0  # sum of successful request latencies
    latency_ewma: float | None = None  # seconds per successful request, smoothed
    latencies: LatencyHistogram = field(default_factory=lambda: LatencyHistogram())
    last_error: str = ""

    def __post_init__(self) -> None:
        if self.limit <= 0:
            self.limit = self.spec.slots

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def free(self) -> bool:
        """Whether the node may take one more request now (ignoring cool-down)."""
        return self.health is Health.admitted and not self.suspect and self.active < self.limit

    def record_success(self, latency: float, output_tokens: int | None) -> None:
        self.successes += 1
        self.consecutive_failures = 0
        self.suspect = False
        self.cooldown_until = 0.0
        self.output_tokens += output_tokens or 0
        self.busy_time += latency
        self.latencies.add(latency)
        a = 0.3
        self.latency_ewma = (
            latency if self.latency_ewma is None else a * latency + (1 - a) * self.latency_ewma
        )

    def record_failure(self, reason: str) -> None:
        self.errors += 1
        self.consecutive_failures += 1
        self.last_error = reason

    def stats(self, *, restarts: int | None = None) -> NodeLine:
        """The node's line in ``report.json`` (``restarts``: for a local node)."""
        lat = self.latencies
        return NodeLine(
            url=self.spec.base_url,
            requests=self.requests,
            successes=self.successes,
            errors=self.errors,
            hedges=self.hedges,
            busy=self.busy,
            slots=self.spec.slots,
            slots_from=self.spec.slots_from.value,
            limit=self.limit,
            output_tokens=self.output_tokens,
            tokens_per_s=round(self.output_tokens / self.busy_time, 2) if self.busy_time else 0,
            latency_p50_s=round(lat.quantile(0.5), 4) if lat.count else None,
            latency_p95_s=round(lat.quantile(0.95), 4) if lat.count else None,
            health=self.health.value,
            last_error=self.last_error,
            restarts=restarts,
            price_per_hour=self.spec.price_per_hour,
        )


class LatencyHistogram:
    """Request latencies in logarithmic buckets 1 % wide: nearest-rank quantiles within
    0.5 %, in memory that does not grow with the number of requests (at most ~1,600
    buckets from 0.1 ms to 10 minutes)."""

    _FLOOR = 1e-4  # seconds; anything faster counts as this
    _STEP = math.log(1.01)

    def __init__(self) -> None:
        self.count = 0
        self._buckets: dict[int, int] = {}

    def add(self, seconds: float) -> None:
        bucket = round(math.log(max(seconds, self._FLOOR) / self._FLOOR) / self._STEP)
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
        self.count += 1

    def quantile(self, q: float) -> float:
        """The nearest-rank ``q`` quantile (0 < q ≤ 1) of the latencies added so far."""
        if not self.count:
            raise ValueError("no latencies recorded")
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return self._FLOOR * math.exp(bucket * self._STEP)
        raise AssertionError("unreachable: rank ≤ count")
