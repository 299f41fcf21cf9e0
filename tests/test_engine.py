"""The engine against scripted fake nodes, in virtual time (pytest-trio's autojump clock)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import trio

from runner._acceptance import json_acceptor
from runner._config import EngineConfig
from runner._engine import Engine
from runner._errors import ClusterUnavailable
from runner._nodes import NodeSpec
from runner._request import Api, GenerationRequest, Style
from runner._work import Work
from tests.fakecluster import FakeCluster, FakeNode

SETTINGS = EngineConfig(
    slots=1,
    stream=False,
    stall_timeout=30.0,
    request_timeout=60.0,
    probe_interval=1.0,
    probe_timeout=5.0,
    no_node_timeout=120.0,
    backoff_initial=0.1,
    backoff_max=2.0,
)

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "year"],
}


def make_work(n: int, *, seed: int = 7) -> list[Work]:
    works = []
    for i in range(n):
        request = GenerationRequest(
            api=Api.textsynth,
            style=Style.completion,
            engine="m",
            prompt=f"item {i}",
            params={"max_tokens": 20},
            seed=seed,
        )
        works.append(Work(f"id{i}", i, {"n": i}, request, request.key()))
    return works


def specs(*ports: int, slots: int = 1) -> list[NodeSpec]:
    return [NodeSpec(f"127.0.0.1:{p}", f"http://127.0.0.1:{p}", slots=slots) for p in ports]


async def run_engine(
    nodes: dict[int, FakeNode],
    works: list[Work],
    *,
    settings: EngineConfig = SETTINGS,
    slots: int = 1,
    acceptor: Any = None,
    on_request: Any = None,
) -> tuple[Engine, list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    transport = FakeCluster({f"127.0.0.1:{p}": node for p, node in nodes.items()})
    kwargs = {"acceptor": acceptor} if acceptor else {}
    if on_request is not None:
        kwargs["on_request"] = on_request
    engine = Engine(
        specs(*nodes, slots=slots),
        settings,
        api=Api.textsynth,
        style=Style.completion,
        engine_id="m",
        on_result=records.append,
        transport=transport,
        **kwargs,
    )
    await engine.run(iter(works))
    return engine, records


def by_node(records: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["node"]] = counts.get(r["node"], 0) + 1
    return counts


def assert_each_item_once(records: list[dict[str, Any]], n: int) -> None:
    assert sorted(r["index"] for r in records) == list(range(n))


async def test_every_item_ends_as_one_ok_record(autojump_clock: Any) -> None:
    _, records = await run_engine({1: FakeNode(), 2: FakeNode()}, make_work(20))
    assert_each_item_once(records, 20)
    assert all(r["status"] == "ok" for r in records)
    assert records[0]["answer"].startswith("answer to: item")
    assert records[0]["output_tokens"] > 0


async def test_a_node_twice_as_fast_serves_about_twice_as_many(autojump_clock: Any) -> None:
    _, records = await run_engine({1: FakeNode(delay=1.0), 2: FakeNode(delay=2.0)}, make_work(60))
    counts = by_node(records)
    assert 1.7 <= counts["127.0.0.1:1"] / counts["127.0.0.1:2"] <= 2.3


async def test_slots_bound_the_requests_in_flight_per_node(autojump_clock: Any) -> None:
    engine, records = await run_engine({1: FakeNode(delay=1.0)}, make_work(12), slots=3)
    assert_each_item_once(records, 12)
    # 12 items, 3 at a time, 1 s each: 4 s, not 12 s and not 1 s.
    assert engine.finished_at - engine.started_at == pytest.approx(4.0, abs=0.5)


async def test_dead_node_work_moves_to_live_nodes(autojump_clock: Any) -> None:
    dying = FakeNode(delay=1.0, dead_from=5.0)
    engine, records = await run_engine({1: FakeNode(delay=1.0), 2: dying}, make_work(40))
    assert_each_item_once(records, 40)
    assert all(r["status"] == "ok" for r in records)
    assert by_node(records)["127.0.0.1:1"] > 30
    assert engine.nodes[1].health.value == "benched"


async def test_hung_node_is_abandoned_and_its_items_resent(autojump_clock: Any) -> None:
    settings = replace(SETTINGS, request_timeout=10.0, hedge=False)
    hanging = FakeNode(delay=1.0, hang_from=3.0)
    engine, records = await run_engine(
        {1: FakeNode(delay=1.0), 2: hanging}, make_work(30), settings=settings
    )
    assert_each_item_once(records, 30)
    assert all(r["status"] == "ok" for r in records)
    assert engine.nodes[1].errors >= 1


def work_requests_after(node: FakeNode, since: float) -> int:
    """Requests of items (not probes) that reached ``node`` at or after ``since``."""
    return sum(
        1
        for body, at in zip(node.requests, node.arrivals, strict=True)
        if at >= since and str(body.get("prompt", "")).startswith("item ")
    )


async def test_a_node_whose_request_timed_out_gets_no_new_work_while_its_others_hang(
    autojump_clock: Any,
) -> None:
    # Five failures in a row would bench it: without the rule each of its three timeouts
    # frees a slot that takes a new item, which hangs for another whole timeout.
    settings = replace(SETTINGS, request_timeout=10.0, hedge=False, breaker_failures=5)
    hanging = FakeNode(delay=1.0, hang_from=3.5)
    engine, records = await run_engine(
        {1: FakeNode(delay=1.0), 2: hanging}, make_work(60), settings=settings, slots=3
    )
    assert_each_item_once(records, 60)
    assert all(r["status"] == "ok" for r in records)
    hung = work_requests_after(hanging, 3.5)
    assert hung == 3  # the three that hung, and nothing after their first timeout
    assert engine.nodes[1].health.value == "benched"


async def test_a_hung_streaming_node_whose_copies_lost_gets_no_new_work(
    autojump_clock: Any,
) -> None:
    # Streamed answers send bytes all the time: a node with requests in flight that sent
    # none for a quarter of the stall timeout may be hung. Its items are copied at the end;
    # when the copies win, it is benched instead of taking copies of others' items.
    settings = replace(SETTINGS, stream=True, stall_timeout=30.0, request_timeout=100.0)
    hanging = FakeNode(delay=0.5, hang_from=4.0)
    engine, records = await run_engine(
        {1: FakeNode(delay=1.0), 2: hanging}, make_work(40), settings=settings, slots=2
    )
    assert_each_item_once(records, 40)
    assert all(r["status"] == "ok" for r in records)
    assert work_requests_after(hanging, 4.0) == 2  # the two that hung
    assert engine.finished_at - engine.started_at < 30  # well before their stall timeout
    assert engine.nodes[1].health.value == "benched"


async def test_5xx_and_429_bursts_are_retried_elsewhere(autojump_clock: Any) -> None:
    nodes = {1: FakeNode(fail_first=5, fail_status=500), 2: FakeNode(fail_first=5, fail_status=429)}
    settings = replace(SETTINGS, breaker_failures=10)
    engine, records = await run_engine(nodes, make_work(20), settings=settings)
    assert_each_item_once(records, 20)
    assert all(r["status"] == "ok" for r in records)
    assert sum(n.errors for n in engine.nodes) == 10
    retried = [r for r in records if r["attempts"] > 1]
    assert retried and all("overloaded" in " ".join(r["errors"]) for r in retried)


async def test_malformed_bodies_count_as_node_failures(autojump_clock: Any) -> None:
    _, records = await run_engine({1: FakeNode(malformed_first=2), 2: FakeNode()}, make_work(10))
    assert all(r["status"] == "ok" for r in records)
    assert any("ProtocolError" in " ".join(r["errors"]) for r in records)


async def test_a_request_rejected_everywhere_fails_with_its_reasons(autojump_clock: Any) -> None:
    settings = replace(SETTINGS, max_attempts=3, breaker_failures=100)
    nodes = {1: FakeNode(fail_first=10**6), 2: FakeNode(fail_first=10**6)}
    _, records = await run_engine(nodes, make_work(3), settings=settings)
    assert_each_item_once(records, 3)
    assert all(r["status"] == "failed" for r in records)
    assert all(r["attempts"] == 3 and "500" in r["error"] for r in records)


async def test_json_wrapped_in_prose_is_repaired_and_provenance_recorded(
    autojump_clock: Any,
) -> None:
    def answer(body: dict[str, Any]) -> str:
        return 'Sure! Here it is: {"title": "Heat", "year": 1995,} Hope it helps.'

    acceptor = json_acceptor(SCHEMA, source="test")
    _, records = await run_engine({1: FakeNode(answer=answer)}, make_work(3), acceptor=acceptor)
    assert all(r["status"] == "ok" for r in records)
    assert records[0]["answer"] == {"title": "Heat", "year": 1995}
    assert records[0]["repair"] in ("extracted", "repaired")


async def test_invalid_json_is_regenerated_with_the_next_seed(autojump_clock: Any) -> None:
    def answer(body: dict[str, Any]) -> str:
        if body["seed"] == 7:
            return "I do not know that film."
        return json.dumps({"title": "Heat", "year": 1995})

    acceptor = json_acceptor(SCHEMA, source="test")
    _, records = await run_engine(
        {1: FakeNode(answer=answer), 2: FakeNode(answer=answer)}, make_work(4), acceptor=acceptor
    )
    for r in records:
        assert r["status"] == "ok"
        assert r["seeds"] == [7, 8] and r["seed"] == 8 and r["attempts"] == 2
        assert r["repair"] == "strict"


async def test_an_answer_that_never_validates_is_a_failure_record(autojump_clock: Any) -> None:
    settings = replace(SETTINGS, json_attempts=3)
    acceptor = json_acceptor(SCHEMA, source="test")
    node = FakeNode(answer=lambda body: '{"title": 3}')
    _, records = await run_engine({1: node}, make_work(2), settings=settings, acceptor=acceptor)
    assert_each_item_once(records, 2)
    for r in records:
        assert r["status"] == "failed"
        assert r["seeds"] == [7, 8, 9]
        assert len(r["errors"]) == 3
        assert r["text"] == '{"title": 3}'


async def test_all_nodes_down_stops_the_run_after_the_bounded_wait(autojump_clock: Any) -> None:
    settings = replace(SETTINGS, no_node_timeout=30.0)
    nodes = {1: FakeNode(dead_from=3.5), 2: FakeNode(dead_from=3.5)}
    records: list[dict[str, Any]] = []
    engine = Engine(
        specs(1, 2),
        settings,
        api=Api.textsynth,
        style=Style.completion,
        engine_id="m",
        on_result=records.append,
        transport=FakeCluster({f"127.0.0.1:{p}": n for p, n in nodes.items()}),
    )
    start = trio.current_time()
    with pytest.raises(ClusterUnavailable, match="no node could serve for 30s"):
        await engine.run(iter(make_work(50)))
    assert trio.current_time() - start < 60
    assert 4 <= len(records) <= 8  # what finished before the outage is kept
    assert all(r["status"] == "ok" for r in records)


async def test_nodes_down_for_a_while_then_back_finish_the_run(autojump_clock: Any) -> None:
    nodes = {
        1: FakeNode(dead_from=3.5, dead_until=40.0),
        2: FakeNode(dead_from=3.5, dead_until=50.0),
    }
    engine, records = await run_engine(nodes, make_work(30))
    assert_each_item_once(records, 30)
    assert all(r["status"] == "ok" for r in records)
    assert {n.health.value for n in engine.nodes} == {"admitted"}


async def test_benched_node_is_readmitted_after_a_successful_probe(autojump_clock: Any) -> None:
    flaky = FakeNode(delay=1.0, dead_from=2.0, dead_until=10.0)
    engine, records = await run_engine({1: FakeNode(delay=1.0), 2: flaky}, make_work(60))
    assert_each_item_once(records, 60)
    assert by_node(records)["127.0.0.1:2"] > 10  # it served again after coming back
    assert engine.nodes[1].health.value == "admitted"


async def test_hedging_reroutes_the_stragglers_last_item(autojump_clock: Any) -> None:
    nodes = {1: FakeNode(delay=1.0), 2: FakeNode(delay=1.0), 3: FakeNode(delay=30.0)}
    with_hedge, _ = await run_engine(nodes, make_work(20))
    nodes = {1: FakeNode(delay=1.0), 2: FakeNode(delay=1.0), 3: FakeNode(delay=30.0)}
    without, _ = await run_engine(nodes, make_work(20), settings=replace(SETTINGS, hedge=False))
    assert with_hedge.finished_at - with_hedge.started_at < 15
    assert without.finished_at - without.started_at >= 30
    assert sum(n.hedges for n in with_hedge.nodes) >= 1


async def test_streamed_answers_are_assembled(autojump_clock: Any) -> None:
    settings = replace(SETTINGS, stream=True)
    _, records = await run_engine({1: FakeNode()}, make_work(3), settings=settings)
    assert [r["answer"].strip() for r in sorted(records, key=lambda r: r["index"])] == [
        f"answer to: item {i}" for i in range(3)
    ]


async def test_adaptive_mode_finds_each_nodes_best_concurrency(autojump_clock: Any) -> None:
    settings = replace(SETTINGS, adaptive=True, max_slots=8, hedge=False)
    nodes = {1: FakeNode(delay=1.0, parallel=1), 2: FakeNode(delay=1.0, parallel=4)}
    engine, records = await run_engine(nodes, make_work(600), settings=settings)
    assert_each_item_once(records, 600)
    serial, parallel = engine.nodes
    assert serial.limit <= 2
    assert 3 <= parallel.limit <= 5
    assert by_node(records)["127.0.0.1:2"] > 2.5 * by_node(records)["127.0.0.1:1"]


async def test_every_request_is_traced_with_exactly_one_final_per_item(
    autojump_clock: Any,
) -> None:
    traces: list[Any] = []
    nodes = {1: FakeNode(delay=1.0, fail_first=2), 2: FakeNode(delay=1.0), 3: FakeNode(delay=30.0)}
    engine = Engine(
        specs(1, 2, 3),
        replace(SETTINGS, breaker_failures=10),
        api=Api.textsynth,
        style=Style.completion,
        engine_id="m",
        on_result=lambda record: None,
        on_request=traces.append,
        transport=FakeCluster({f"127.0.0.1:{p}": n for p, n in nodes.items()}),
    )
    await engine.run(iter(make_work(20)))
    finals = [t for t in traces if t.final]
    assert sorted(t.item for t in finals) == sorted(f"id{i}" for i in range(20))
    assert {t.outcome for t in finals} == {"ok"}
    outcomes = {t.outcome for t in traces}
    assert "server" in outcomes and "cancelled" in outcomes
    assert all(t.ended >= t.started for t in traces)


async def test_a_request_that_lost_the_race_is_traced_from_its_send_to_its_cancel(
    autojump_clock: Any,
) -> None:
    nodes = {1: FakeNode(delay=1.0), 2: FakeNode(delay=1.0), 3: FakeNode(delay=30.0)}
    traces: list[Any] = []
    await run_engine(nodes, make_work(20), on_request=traces.append)
    won = {t.item: t for t in traces if t.final}
    lost = [t for t in traces if t.outcome == "cancelled"]
    assert lost
    for trace in lost:
        assert trace.started < won[trace.item].started  # the original, sent before its copy
        assert trace.ended == pytest.approx(won[trace.item].ended, abs=0.01)
