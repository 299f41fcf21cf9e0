"""The tail rule: near the end, slow nodes leave the last fresh items to faster ones."""

from __future__ import annotations

import signal

import trio
from hypothesis import given
from hypothesis import strategies as st

from bench import SimCluster, SimNodeSpec, SimTransport, Trace
from bench._engine_adapter import run_engine_strategy
from bench._items import item
from bench._strategy import Node, Settings
from runner._hedging import MARGIN
from runner._nodes import Health, NodeSpec, NodeState
from runner._tail import Pace, pace_of, takes_fresh


def _node(name: str, latency: float | None, limit: int = 1) -> NodeState:
    node = NodeState(NodeSpec(name, f"http://127.0.0.1/{name}", slots=limit))
    node.latency_ewma = latency
    return node


def _pace(*latencies: float) -> Pace:
    pace = pace_of([_node(f"n{i}", x) for i, x in enumerate(latencies)])
    assert pace is not None
    return pace


def test_a_slow_node_takes_work_while_much_is_left_and_declines_the_last_items() -> None:
    pace = _pace(1.0, 10.0)  # together 1.1 items/s; the fast one alone 1 item/s
    assert takes_fresh(10.0, 100, pace)  # 100 items: ~90 s of work for the pair
    assert not takes_fresh(10.0, 3, pace)  # 3 items: the fast node is done in ~3 s


def test_a_node_not_measured_yet_always_takes_work() -> None:
    assert takes_fresh(None, 1, _pace(1.0, 10.0))
    assert takes_fresh(5.0, 1, None)


def test_benched_nodes_and_unmeasured_ones_do_not_count_in_the_pace() -> None:
    fast = _node("fast", 1.0)
    fast.health = Health.benched
    pace = pace_of([fast, _node("slow", 10.0), _node("new", None)])
    assert pace is not None
    assert pace.latencies == (10.0,)
    assert takes_fresh(10.0, 1, pace)  # with the fast node benched the slow one must work
    assert pace_of([_node("new", None)]) is None


latency = st.floats(min_value=0.01, max_value=100.0)


@given(st.lists(latency, min_size=1, max_size=30), st.integers(0, 10_000))
def test_the_fastest_node_always_takes_work(latencies: list[float], remaining: int) -> None:
    pace = _pace(*latencies)
    assert takes_fresh(min(latencies), remaining, pace)


@given(latency, st.integers(1, 30), st.integers(0, 10_000))
def test_a_cluster_of_equal_nodes_never_declines(x: float, count: int, remaining: int) -> None:
    assert takes_fresh(x, remaining, _pace(*[x] * count))


@given(st.lists(latency, min_size=1, max_size=30), st.integers(0, 5_000), st.integers(0, 5_000))
def test_a_node_that_takes_work_with_few_items_left_takes_it_with_more(
    latencies: list[float], fewer: int, more: int
) -> None:
    fewer, more = sorted((fewer, more))
    pace = _pace(*latencies)
    for x in latencies:
        assert not takes_fresh(x, fewer, pace) or takes_fresh(x, more, pace)


@given(st.lists(latency, min_size=1, max_size=30), st.integers(0, 5_000))
def test_the_search_finds_what_a_scan_of_every_node_finds(
    latencies: list[float], remaining: int
) -> None:
    pace = _pace(*latencies)
    ordered = sorted(latencies)
    slowest = ordered[0]
    throughput = 0.0
    for x in ordered:
        throughput += 1 / x
        if x <= remaining / throughput + MARGIN * ordered[0]:
            slowest = x
        else:
            break
    assert pace.slowest_taking(remaining) == slowest


async def _makespan(size_known: bool) -> tuple[float, list[Trace]]:
    specs = [SimNodeSpec("fast", speed=50.0, slots=1), SimNodeSpec("slow", speed=5.0, slots=1)]
    cluster = SimCluster(specs)
    urls = cluster.base_urls
    items = [item(i, 100) for i in range(40)]
    traces: list[Trace] = []
    work = items if size_known else iter(items)  # a bare iterator: the size is unknown
    start = trio.current_time()
    await run_engine_strategy(
        [Node(s.name, urls[s.name], s.slots) for s in specs],
        work,
        Settings(time_scale=1.0, max_tokens=512),
        traces.append,
        transport=SimTransport(cluster),
        hedge=False,
    )
    return trio.current_time() - start, traces


async def test_with_the_size_known_the_last_items_go_to_the_fast_node(
    autojump_clock: trio.abc.Clock,
) -> None:
    # 40 items of 2 s on the fast node, 20 s on the slow one: the slow node's share is
    # about 4 items; a fifth it starts near the end would finish long after the fast one.
    with_rule, traces = await _makespan(size_known=True)
    without, _ = await _makespan(size_known=False)
    assert with_rule < without
    last_slow = max(t.start for t in traces if t.node == "slow")
    assert last_slow < with_rule - 20  # nothing the slow node started ran past the end
    assert sum(t.final and t.outcome == "ok" for t in traces) == 40


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError("the engine did not finish within 120 real seconds")


async def test_a_wide_cluster_with_deaths_and_hangs_finishes_in_virtual_time_losing_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    """60 heterogeneous nodes, three of them dying or hanging mid-run: every item settles.
    (A worker that waits for a moment already past would spin without letting virtual time
    move: the real-time alarm turns that into a failure instead of a hung test.)"""
    from bench._scenarios import item_stream
    from bench.wide import wide_nodes

    items = list(item_stream(1200, seed=3))
    specs = wide_nodes(60, items)
    cluster = SimCluster(specs)
    urls = cluster.base_urls
    traces: list[Trace] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(120)
    try:
        await run_engine_strategy(
            [Node(s.name, urls[s.name], s.slots) for s in specs],
            items,
            Settings(time_scale=1.0, max_tokens=512),
            traces.append,
            transport=SimTransport(cluster),
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    finals = {t.item for t in traces if t.final}
    assert finals == {i.id for i in items}
    assert {e.outcome for e in cluster.log} >= {"ok", "died"}
    hedges = sum(t.outcome == "hedge_lost" for t in traces)
    # Copies at the end are 3-5 % of the ~1,260 requests here (35-63 over ten runs: the order
    # of equal candidates follows object ids); a runaway hedger would make hundreds.
    assert hedges <= 0.08 * len(traces)
