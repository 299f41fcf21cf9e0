"""The hedging decision: copy an item only where it would likely finish sooner."""

from __future__ import annotations

from dataclasses import dataclass, field

from runner._hedging import hedge_candidate, pick, rank
from runner._nodes import NodeSpec, NodeState


@dataclass(eq=False)
class Item:
    running: dict[str, tuple[object, float]]
    avoid: set[str] = field(default_factory=set)


def _nodes(**latencies: float | None) -> dict[str, NodeState]:
    nodes = {}
    for name, latency in latencies.items():
        node = NodeState(NodeSpec(name, f"http://127.0.0.1/{name}"))
        node.latency_ewma = latency
        nodes[name] = node
    return nodes


def test_an_item_on_a_slow_node_is_copied_to_a_fast_idle_one() -> None:
    nodes = _nodes(fast=1.0, slow=10.0)
    item = Item({"slow": (None, 0.0)})
    assert hedge_candidate(nodes["fast"], nodes, [item], now=1.0) is item


def test_an_item_about_to_finish_is_left_alone() -> None:
    nodes = _nodes(fast=1.0, slow=10.0)
    item = Item({"slow": (None, 0.0)})
    assert hedge_candidate(nodes["fast"], nodes, [item], now=9.5) is None


def test_an_overdue_item_is_copied_even_where_the_estimate_says_it_is_done() -> None:
    nodes = _nodes(fast=1.0, slow=2.0)
    item = Item({"slow": (None, 0.0)})  # 30 s on a node that usually takes 2 s: hung?
    assert hedge_candidate(nodes["fast"], nodes, [item], now=30.0) is item


def test_items_already_copied_or_failed_here_are_not_taken() -> None:
    nodes = _nodes(fast=1.0, slow=10.0, other=10.0)
    copied = Item({"slow": (None, 0.0), "other": (None, 0.0)})
    failed_here = Item({"slow": (None, 0.0)}, avoid={"fast"})
    assert hedge_candidate(nodes["fast"], nodes, [copied, failed_here], now=1.0) is None


def test_the_item_with_the_most_to_gain_is_chosen() -> None:
    nodes = _nodes(fast=1.0, slow=10.0, slower=40.0)
    on_slow, on_slower = Item({"slow": (None, 0.0)}), Item({"slower": (None, 0.0)})
    assert hedge_candidate(nodes["fast"], nodes, [on_slow, on_slower], now=1.0) is on_slower


def test_a_node_with_no_latency_yet_uses_the_clusters_typical_one() -> None:
    nodes = _nodes(new=None, slow=10.0, fast=1.0)
    item = Item({"slow": (None, 0.0)})
    assert hedge_candidate(nodes["new"], nodes, [item], now=0.5) is item


def test_one_ranking_serves_every_idle_node_and_passes_over_items_copied_since() -> None:
    nodes = _nodes(a=1.0, b=1.0, slow=10.0, slower=20.0)
    on_slow = Item({"slow": (None, 0.0)})
    on_slower = Item({"slower": (None, 0.0)})
    ranking = rank(nodes, [on_slow, on_slower], now=1.0)
    assert [task for _, task in ranking.entries] == [on_slower, on_slow]  # most time left first
    first = pick(nodes["a"], ranking)
    assert first is on_slower
    on_slower.running["a"] = (None, 1.0)  # the engine sends the copy
    assert pick(nodes["b"], ranking) is on_slow
    on_slow.running["b"] = (None, 1.0)
    assert pick(nodes["a"], ranking) is None


def test_a_ranking_gives_nothing_to_a_node_too_slow_to_gain() -> None:
    nodes = _nodes(slow=10.0, slowish=8.0)
    ranking = rank(nodes, [Item({"slow": (None, 0.0)})], now=1.0)  # 9 s left
    assert pick(nodes["slowish"], ranking) is None  # 8 s x 1.25 does not beat 9 s


def test_the_copies_left_to_make_are_the_items_the_fastest_node_would_finish_sooner() -> None:
    nodes = _nodes(fast=2.0, slow=20.0)
    # On a node that takes 20 s, sent 19, 4, 2 and 0 s ago: 1, 16, 18 and 20 s left.
    items = [Item({"slow": (None, float(sent))}) for sent in (0, 15, 17, 19)]
    ranking = rank(nodes, items, now=19.0)
    assert [remaining for remaining, _ in ranking.entries] == [20.0, 18.0, 16.0, 1.0]
    assert ranking.worth_copying(2.0) == 3  # the last would end before a copy (2.5 s)
    assert ranking.worth_copying(20.0) == 0
    assert ranking.worth_copying(None) == 0
    ranking.start = 1  # the first gained a copy
    assert ranking.worth_copying(2.0) == 2
