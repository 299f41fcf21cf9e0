"""Nodes as the engine sees them: where they are, and what it has learnt about them.

:class:`NodeSpec` is configuration (address, slots, key). :class:`NodeState` is the engine's
running knowledge of one node: how many requests it has in flight, how fast it answers, and
its circuit breaker (admitted, benched after repeated failures, re-admitted after a
successful probe). ``NodeState`` holds no I/O; the engine drives it.
"""

from __future__ import annotations

import statistics
from array import array
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class NodeSpec:
    """One node of the cluster.

    Attributes:
        name: how the node is called in logs, records and reports (``host:port`` by default).
        base_url: e.g. ``http://10.0.0.5:8088``.
        slots: the most requests the engine keeps in flight on it.
        api_key: its Bearer key, if it needs one (never logged or written).
    """

    name: str
    base_url: str
    slots: int = 1
    api_key: str | None = field(default=None, repr=False)


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
    consecutive_failures: int = 0
    cooldown_until: float = 0.0  # the last admitted node backs off instead of being benched
    requests: int = 0
    successes: int = 0
    errors: int = 0
    hedges: int = 0  # duplicates of slow items sent here
    output_tokens: int = 0
    busy_time: float = 0.0  # sum of successful request latencies
    latency_ewma: float | None = None  # seconds per successful request, smoothed
    latencies: array[float] = field(default_factory=lambda: array("d"))
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
        return self.health is Health.admitted and self.active < self.limit

    def record_success(self, latency: float, output_tokens: int | None) -> None:
        self.successes += 1
        self.consecutive_failures = 0
        self.cooldown_until = 0.0
        self.output_tokens += output_tokens or 0
        self.busy_time += latency
        self.latencies.append(latency)
        a = 0.3
        self.latency_ewma = (
            latency if self.latency_ewma is None else a * latency + (1 - a) * self.latency_ewma
        )

    def record_failure(self, reason: str) -> None:
        self.errors += 1
        self.consecutive_failures += 1
        self.last_error = reason

    def stats(self) -> dict[str, object]:
        """The node's line in ``report.json``."""
        lat = sorted(self.latencies)
        return {
            "url": self.spec.base_url,
            "requests": self.requests,
            "successes": self.successes,
            "errors": self.errors,
            "hedges": self.hedges,
            "limit": self.limit,
            "output_tokens": self.output_tokens,
            "tokens_per_s": round(self.output_tokens / self.busy_time, 2) if self.busy_time else 0,
            "latency_p50_s": round(statistics.median(lat), 4) if lat else None,
            "latency_p95_s": round(_percentile(lat, 0.95), 4) if lat else None,
            "health": self.health.value,
            "last_error": self.last_error,
        }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]
