"""What a simulated node is: its speed, its slots, and its failures on a schedule.

A :class:`SimNodeSpec` is plain data, shared by both front ends (the in-process
:class:`~bench._transport.SimTransport` and the real HTTP server of ``bench._server``) and
written to JSON for the server process. Every time in a spec is in *simulated* seconds since
the cluster's clock started (the first request any node of the cluster receives); the
cluster's ``time_scale`` turns them into real seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ErrorBurst:
    """A window during which every new request is answered with ``status`` at once.

    Attributes:
        start: first simulated second of the window.
        end: the window ends before this second.
        status: the HTTP status answered (500, 429, 503...), with an ``{"error": ...}`` body.
    """

    start: float
    end: float
    status: int = 503


@dataclass(frozen=True)
class SimNodeSpec:
    """One simulated TextSynth node.

    Attributes:
        name: the node's name in logs and timelines.
        speed: tokens per second generated for one request (per slot); ``None`` is an
            instant node (no prompt latency, no generation time).
        slots: requests generated at once; further requests wait in FIFO order.
        best_concurrency: when set, the node's total throughput rises with the number of
            requests generating up to this count and degrades beyond it (see
            :meth:`rate`); give such a node many ``slots`` so the curve, not the slot
            count, sets its pace.
        degrade: how fast throughput falls past ``best_concurrency`` (an exponent; 0 keeps
            it flat).
        prompt_latency: simulated seconds spent on the prompt, in a slot, before the first
            token.
        median_tokens: median answer length when the prompt carries no ``tokens=`` marker.
        sigma: spread (lognormal sigma) of those lengths.
        chunk_tokens: tokens per streamed chunk.
        die_at: from then on the node refuses connections and aborts open ones.
        hang_from: from then on it accepts and reads requests but never answers; requests
            in flight freeze too.
        stall_from: from then on every answer stops once half its tokens are generated (a
            stream already past half stops at its next chunk) and hangs: a stream sends
            its first half, a non-streamed request gets nothing; ``GET /health`` still
            answers.
        recover_at: the end of the die / hang / stall outage: new requests are served
            again (requests caught by the outage are not).
        error_bursts: windows answered with an HTTP error.
        malformed: probability that an answer is a 200 whose body is not JSON.
        seed: seeds the node's own random choices (malformed answers).
        address: ``host:port`` the node is reached at in-process (the real server binds
            127.0.0.1 and reports the ports it got); ``None`` assigns one.
    """

    name: str
    speed: float | None = 20.0
    slots: int = 1
    best_concurrency: int | None = None
    degrade: float = 0.5
    prompt_latency: float = 0.0
    median_tokens: float = 120.0
    sigma: float = 0.6
    chunk_tokens: int = 8
    die_at: float | None = None
    hang_from: float | None = None
    stall_from: float | None = None
    recover_at: float | None = None
    error_bursts: tuple[ErrorBurst, ...] = ()
    malformed: float = 0.0
    seed: int = 0
    address: str | None = None

    def __post_init__(self) -> None:
        if self.speed is not None and not self.speed > 0:
            raise ValueError(f"{self.name}: speed must be > 0 or None (instant), not {self.speed}")
        if self.slots < 1:
            raise ValueError(f"{self.name}: slots must be ≥ 1, not {self.slots}")
        if self.best_concurrency is not None and self.best_concurrency < 1:
            raise ValueError(f"{self.name}: best_concurrency must be ≥ 1")
        if not 0.0 <= self.malformed <= 1.0:
            raise ValueError(f"{self.name}: malformed is a probability, not {self.malformed}")
        if self.chunk_tokens < 1:
            raise ValueError(f"{self.name}: chunk_tokens must be ≥ 1")

    # ------------------------------------------------------------------ model

    def rate(self, generating: int) -> float:
        """Tokens per second one request gets while ``generating`` requests share the node.

        Without ``best_concurrency`` every slot runs at ``speed``. With it, the node's total
        throughput is ``k * speed`` for ``k ≤ best`` and ``best * speed * (best / k) **
        degrade`` past it, shared evenly.
        """
        if self.speed is None:
            return math.inf
        best = self.best_concurrency
        k = max(1, generating)
        if best is None or k <= best:
            return self.speed
        return self.speed * float((best / k) ** (1.0 + self.degrade))

    @property
    def capacity(self) -> float:
        """The node's best total throughput in tokens per second."""
        if self.speed is None:
            return math.inf
        return self.speed * (self.best_concurrency or self.slots)

    def outage_start(self) -> float | None:
        """When the first die / hang / stall outage begins, if any."""
        starts = [t for t in (self.die_at, self.hang_from, self.stall_from) if t is not None]
        return min(starts) if starts else None

    def in_outage(self, start: float | None, now: float) -> bool:
        """Whether ``now`` falls in the outage that begins at ``start``."""
        if start is None or now < start:
            return False
        return self.recover_at is None or now < self.recover_at or self.recover_at <= start

    # ------------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON-ready data (``error_bursts`` as ``[start, end, status]``)."""
        data = asdict(self)
        data["error_bursts"] = [[b.start, b.end, b.status] for b in self.error_bursts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimNodeSpec:
        """Build a spec from :meth:`to_json` data; an unknown key is an error naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown simulated-node key(s): {', '.join(unknown)}")
        values = dict(data)
        values["error_bursts"] = tuple(
            b if isinstance(b, ErrorBurst) else ErrorBurst(*b)
            for b in values.get("error_bursts", ())
        )
        return cls(**values)


@dataclass(frozen=True)
class ClusterSpec:
    """A set of simulated nodes and the factor from simulated to real seconds.

    Attributes:
        nodes: the nodes.
        time_scale: real seconds per simulated second (0.01 runs a 10-minute scenario in
            6 seconds).
        answer: ``"module:function"`` of an answer hook for the server process (the
            in-process front end takes a callable instead).
    """

    nodes: tuple[SimNodeSpec, ...]
    time_scale: float = 1.0
    answer: str | None = None

    def dumps(self) -> str:
        return json.dumps(
            {
                "time_scale": self.time_scale,
                "answer": self.answer,
                "nodes": [n.to_json() for n in self.nodes],
            }
        )

    @classmethod
    def loads(cls, text: str) -> ClusterSpec:
        data = json.loads(text)
        return cls(
            nodes=tuple(SimNodeSpec.from_json(n) for n in data["nodes"]),
            time_scale=float(data.get("time_scale", 1.0)),
            answer=data.get("answer"),
        )
