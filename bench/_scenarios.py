"""The benchmark scenarios: each builds the simulated nodes and the items to run.

Times are simulated seconds; ``time_scale`` (real seconds per simulated second) makes a
ten-minute scenario run in seconds. Every builder takes ``items`` and ``time_scale`` so the
smoke tests can run a tiny version of the same scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from . import _items
from ._bounds import Bound, lower_bound
from ._items import Item
from ._spec import SimNodeSpec
from ._strategy import Settings

MAX_TOKENS = 512
# Real seconds per simulated second in the makespan scenarios. Faster is not better: below
# about 0.05 the Python client's CPU per streamed chunk (about 0.1 ms) becomes a visible
# part of each request's simulated time (see docs/benchmarks.md, "Time scale").
TIME_SCALE = 0.05
MEDIAN_TOKENS = 120.0
SIGMA = 0.6


@dataclass(frozen=True)
class Scenario:
    """One benchmark scenario.

    Attributes:
        name: its name on the command line.
        kind: ``makespan`` (ratio to the lower bound), ``overhead`` (requests/s, client
            CPU per request) or ``memory`` (peak RSS per item count).
        description: one line for reports.
        nodes: the simulated nodes.
        items: the items (empty for ``memory``, which writes its own input files).
        settings: the client settings.
        slots: requests in flight a user would configure per node (by name).
        sizes: item counts to compare (``memory``).
        events: ``(simulated second, label)`` marks for timelines.
        strategies: the strategies ``python -m bench`` runs by default.
        fixed: named per-node in-flight counts for the engine in fixed mode (the sweep
            that adaptive mode is measured against); each runs as ``engine_<name>``.
    """

    name: str
    kind: str
    description: str
    nodes: tuple[SimNodeSpec, ...]
    items: tuple[Item, ...]
    settings: Settings
    slots: Mapping[str, int]
    sizes: tuple[int, ...] = ()
    events: tuple[tuple[float, str], ...] = field(default=())
    strategies: tuple[str, ...] = ("engine", "roundrobin", "nginx")
    fixed: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def bound(self) -> Bound:
        """The makespan lower bound of this scenario."""
        max_tokens = self.settings.max_tokens
        return lower_bound(self.nodes, (min(i.tokens, max_tokens) for i in self.items))


def item_stream(count: int, seed: int = 1) -> Iterator[Item]:
    """The scenarios' items: lognormal answer lengths (median 120, clipped at 512)."""
    return _items.generate(
        count, seed=seed, median=MEDIAN_TOKENS, sigma=SIGMA, max_tokens=MAX_TOKENS
    )


def _make_items(count: int, seed: int) -> tuple[Item, ...]:
    return tuple(item_stream(count, seed))


def _node(name: str, speed: float, slots: int, best: int | None = None) -> SimNodeSpec:
    # Prompt processing takes longer on slower nodes: 10 tokens' worth of generation time.
    return SimNodeSpec(
        name=name, speed=speed, slots=slots, prompt_latency=10.0 / speed, best_concurrency=best
    )


# speed (tokens/s per slot) and slots of the heterogeneous cluster: speeds spread 8.3:1
_HETEROGENEOUS = ((6.0, 1), (8, 2), (12, 4), (16, 2), (24, 3), (32, 1), (40, 4), (50, 2))
_VICTIM = "n7"  # the node with the most capacity (160 tokens/s) dies or hangs


def _heterogeneous_nodes() -> tuple[SimNodeSpec, ...]:
    return tuple(_node(f"n{i + 1}", s, k) for i, (s, k) in enumerate(_HETEROGENEOUS))


def _settings(time_scale: float) -> Settings:
    return Settings(time_scale=time_scale, max_tokens=MAX_TOKENS)


def heterogeneous(*, items: int = 2000, time_scale: float = TIME_SCALE, seed: int = 1) -> Scenario:
    """8 nodes, speeds 6–50 tokens/s per slot, 1–4 slots."""
    nodes = _heterogeneous_nodes()
    return Scenario(
        "heterogeneous",
        "makespan",
        "8 nodes, speeds 6-50 tokens/s per slot (8.3:1), 1-4 slots",
        nodes,
        _make_items(items, seed),
        _settings(time_scale),
        {n.name: n.slots for n in nodes},
    )


def _with_failure(base: Scenario, name: str, label: str) -> Scenario:
    """``base`` with its biggest node dying (``dies``) or hanging at 30 % of the bound."""
    at = round(0.3 * base.bound().seconds, 1)

    def fail(n: SimNodeSpec) -> SimNodeSpec:
        return replace(n, die_at=at) if label == "dies" else replace(n, hang_from=at)

    nodes = tuple(fail(n) if n.name == _VICTIM else n for n in base.nodes)
    description = f"{base.description}; {_VICTIM} {label} at {at:g} s (30 % of the bound)"
    return replace(
        base, name=name, description=description, nodes=nodes, events=((at, f"{_VICTIM} {label}"),)
    )


def node_death(*, items: int = 2000, time_scale: float = TIME_SCALE, seed: int = 1) -> Scenario:
    """The heterogeneous cluster; its biggest node dies at 30 % of the run."""
    base = heterogeneous(items=items, time_scale=time_scale, seed=seed)
    return _with_failure(base, "node_death", "dies")


def node_hang(*, items: int = 2000, time_scale: float = TIME_SCALE, seed: int = 1) -> Scenario:
    """The heterogeneous cluster; its biggest node hangs from 30 % of the run."""
    base = heterogeneous(items=items, time_scale=time_scale, seed=seed)
    return _with_failure(base, "node_hang", "hangs")


def straggler(*, items: int = 2000, time_scale: float = TIME_SCALE, seed: int = 1) -> Scenario:
    """8 equal nodes (30 tokens/s, 2 slots) but one is 10x slower."""
    nodes = tuple(_node(f"n{i + 1}", 30.0 if i < 7 else 3.0, 2) for i in range(8))
    return Scenario(
        "straggler",
        "makespan",
        "8 nodes at 30 tokens/s x 2 slots, one (n8) at 3 tokens/s",
        nodes,
        _make_items(items, seed),
        _settings(time_scale),
        {n.name: n.slots for n in nodes},
        strategies=("engine", "engine_nohedge", "roundrobin", "nginx"),
    )


_BEST = (1, 1, 2, 2, 4, 4, 8, 8)
ADAPTIVE_CONFIGURED_SLOTS = 8  # what a user who does not know the best counts would set


def adaptive(*, items: int = 2000, time_scale: float = TIME_SCALE, seed: int = 1) -> Scenario:
    """8 nodes whose throughput peaks at 1, 1, 2, 2, 4, 4, 8, 8 requests in flight."""
    nodes = tuple(_node(f"n{i + 1}", 20.0, 32, best) for i, best in enumerate(_BEST))
    # The sweep: the same count on every node, and each node at its own best count (what a
    # per-node sweep finds, and the best any fixed setting can do).
    fixed: dict[str, Mapping[str, int]] = {
        f"fixed_{k}": {n.name: k for n in nodes} for k in (1, 2, 4, 8)
    }
    fixed["fixed_best"] = {n.name: best for n, best in zip(nodes, _BEST, strict=True)}
    return Scenario(
        "adaptive",
        "makespan",
        "8 nodes at 20 tokens/s per request; total throughput peaks at 1,1,2,2,4,4,8,8 "
        "requests in flight and degrades past it",
        nodes,
        _make_items(items, seed),
        _settings(time_scale),
        {n.name: ADAPTIVE_CONFIGURED_SLOTS for n in nodes},
        # engine = fixed_8 (the configured 8); fixed_1 and fixed_2 are far behind and slow
        # to run, so they run only when asked for.
        strategies=("engine_adaptive", "engine_fixed_best", "engine_fixed_4", "engine"),
        fixed=fixed,
    )


def _instant_nodes() -> tuple[SimNodeSpec, ...]:
    return tuple(SimNodeSpec(f"n{i + 1}", speed=None, slots=64) for i in range(4))


def overhead(*, items: int = 5000, time_scale: float = 1.0, seed: int = 1) -> Scenario:
    """4 instant nodes: what the client itself costs."""
    nodes = _instant_nodes()
    return Scenario(
        "overhead",
        "overhead",
        "4 instant nodes (64 slots each): requests/s and client CPU per request",
        nodes,
        _make_items(items, seed),
        _settings(time_scale),
        {n.name: 16 for n in nodes},
        strategies=(
            "minimal",
            "minimal_stream",
            "engine",
            "engine_nostream",
            "roundrobin",
            "nginx",
        ),
    )


def memory(
    *, items: int = 200_000, time_scale: float = 1.0, seed: int = 1, small: int = 10_000
) -> Scenario:
    """4 instant nodes; peak RSS of a run over ``small`` items and over ``items`` items."""
    nodes = _instant_nodes()
    return Scenario(
        "memory",
        "memory",
        f"4 instant nodes; peak client RSS over {small:,} vs {items:,} items from a file",
        nodes,
        (),
        _settings(time_scale),
        {n.name: 16 for n in nodes},
        sizes=(small, items),
        strategies=("runner", "engine", "roundrobin", "nginx"),
    )


ScenarioBuilder = Callable[..., Scenario]

SCENARIOS: dict[str, ScenarioBuilder] = {
    "heterogeneous": heterogeneous,
    "node_death": node_death,
    "node_hang": node_hang,
    "straggler": straggler,
    "adaptive": adaptive,
    "overhead": overhead,
    "memory": memory,
}
