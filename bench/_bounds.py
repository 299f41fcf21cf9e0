"""The lower bound a strategy's makespan is compared with.

No schedule can finish before both:

- the *capacity* bound: the time at which the nodes, each running flat out at its best
  throughput while it is up (a dying node counts until it dies, a node in an error burst
  not at all during it), could have generated every token;
- the *longest item* bound: the longest item's prompt latency and generation on the node
  that would do it fastest.

A request's prompt latency holds its slot too: in the capacity bound every item costs, on top
of its answer's tokens, the prompt latency of the node where that is cheapest, counted in the
tokens that slot could have generated meanwhile (``prompt_latency × speed``; nothing on a
node with ``best_concurrency``, whose prompts take no generation capacity). That keeps the
bound a true lower bound while not pretending prompts are free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._spec import SimNodeSpec


@dataclass(frozen=True)
class Bound:
    """A lower bound on the makespan, in simulated seconds, and its two parts."""

    seconds: float
    capacity: float
    longest: float


def up_time(node: SimNodeSpec, horizon: float) -> float:
    """Seconds within ``[0, horizon)`` during which ``node`` serves."""
    down: list[tuple[float, float]] = []
    start = node.outage_start()
    if start is not None:
        end = (
            node.recover_at if node.recover_at is not None and node.recover_at > start else math.inf
        )
        down.append((start, end))
    down.extend((b.start, b.end) for b in node.error_bursts)
    covered = 0.0
    position = 0.0
    for lo, hi in sorted(down):
        lo, hi = max(lo, position), min(hi, horizon)
        if hi > lo:
            covered += hi - lo
            position = hi
    return max(0.0, horizon - covered)


def _tokens_by(nodes: Sequence[SimNodeSpec], horizon: float) -> float:
    return sum(n.capacity * up_time(n, horizon) for n in nodes)


def lower_bound(nodes: Sequence[SimNodeSpec], tokens: Iterable[int]) -> Bound:
    """The lower bound for items of the given answer lengths (already clipped)."""
    lengths = list(tokens)
    if not lengths:
        return Bound(0.0, 0.0, 0.0)
    # A node whose rate follows its load (best_concurrency) spends no generation capacity on
    # prompts in the simulator: its prompts cost nothing here.
    prompt_cost = min(
        (
            0.0 if n.best_concurrency is not None else n.prompt_latency * n.speed
            for n in nodes
            if n.speed is not None
        ),
        default=0.0,
    )
    total = float(sum(lengths)) + prompt_cost * len(lengths)
    if any(math.isinf(n.capacity) for n in nodes):
        return Bound(0.0, 0.0, 0.0)  # instant nodes: nothing to wait for
    hi = 1.0
    while _tokens_by(nodes, hi) < total:
        hi *= 2
        if hi > 1e12:
            return Bound(math.inf, math.inf, math.inf)
    lo = 0.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _tokens_by(nodes, mid) >= total:
            hi = mid
        else:
            lo = mid
    longest_item = max(lengths)
    serving = [n for n in nodes if up_time(n, 1e12) > 0]
    longest = min(
        (n.prompt_latency + longest_item / n.rate(1) for n in serving if n.speed), default=0.0
    )
    return Bound(max(hi, longest), hi, longest)
