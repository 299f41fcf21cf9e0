"""The engine and busy nodes (503 or 429 with ``Retry-After``: "come back later"), against
scripted fake nodes in virtual time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio

from runner._client import NodeClient
from runner._health import probe_benched
from runner._nodes import Health, NodeSpec, NodeState
from runner._request import Api, Style
from tests.fakecluster import FakeNode
from tests.test_engine import SETTINGS, assert_each_item_once, by_node, make_work, run_engine

NO_HEDGE = replace(SETTINGS, hedge=False)


async def test_busy_answers_are_retried_without_counting_as_failures(autojump_clock: Any) -> None:
    settings = replace(NO_HEDGE, max_attempts=2, breaker_failures=1)
    engine, records = await run_engine(
        {1: FakeNode(busy_first=10)}, make_work(3), settings=settings
    )
    assert_each_item_once(records, 3)
    assert all(r["status"] == "ok" and r["errors"] == [] for r in records)
    (node,) = engine.nodes
    assert (node.busy, node.errors, node.consecutive_failures) == (10, 0, 0)
    assert node.health is Health.admitted
    assert node.stats().busy == 10


async def test_a_busy_node_is_asked_again_only_after_the_advised_pause(
    autojump_clock: Any,
) -> None:
    node = FakeNode(delay=1.0, busy_first=1, retry_after="5")
    await run_engine({1: node}, make_work(1), settings=NO_HEDGE)
    first, second = node.arrivals
    assert second - first == pytest.approx(5.0, abs=0.01)


@pytest.mark.parametrize("status", [503, 429])
async def test_work_refused_as_busy_goes_to_a_free_node_at_once(
    autojump_clock: Any, status: int
) -> None:
    busy = FakeNode(busy_first=10**6, busy_status=status, retry_after="30")
    engine, records = await run_engine({1: busy, 2: FakeNode(delay=1.0)}, make_work(10))
    assert_each_item_once(records, 10)
    assert by_node(records) == {"127.0.0.1:2": 10}
    # 10 items one at a time on the free node; the busy one was asked once, then paused.
    assert engine.finished_at - engine.started_at == pytest.approx(10.0, abs=0.5)
    refusing = engine.nodes[0]
    assert (len(busy.requests), refusing.busy, refusing.errors) == (1, 1, 0)
    assert refusing.health is Health.admitted


async def test_busy_answers_past_busy_retries_count_as_failures(autojump_clock: Any) -> None:
    settings = replace(NO_HEDGE, busy_retries=3, max_attempts=2, breaker_failures=100)
    engine, records = await run_engine(
        {1: FakeNode(busy_first=10**6)}, make_work(1), settings=settings
    )
    (record,) = records
    assert record["status"] == "failed" and "busy" in record["error"]
    (node,) = engine.nodes
    assert (record["attempts"], node.busy, node.errors) == (5, 3, 2)


async def test_busy_answers_stop_being_free_after_the_retry_timeout(autojump_clock: Any) -> None:
    settings = replace(NO_HEDGE, retry_timeout=20.0, max_attempts=1)
    engine, records = await run_engine(
        {1: FakeNode(busy_first=10**6, retry_after="1")}, make_work(1), settings=settings
    )
    (record,) = records
    assert record["status"] == "failed"
    assert engine.finished_at - engine.started_at == pytest.approx(21.0, abs=1.0)


async def test_a_503_without_retry_after_is_still_a_node_failure(autojump_clock: Any) -> None:
    engine, records = await run_engine(
        {1: FakeNode(busy_first=1, retry_after=None)}, make_work(1), settings=NO_HEDGE
    )
    (record,) = records
    assert record["status"] == "ok" and "503" in record["errors"][0]
    assert (engine.nodes[0].busy, engine.nodes[0].errors) == (0, 1)


@pytest.mark.parametrize("stream", [False, True])
async def test_too_many_slots_on_a_refusing_node_cost_no_failures(
    autojump_clock: Any, stream: bool
) -> None:
    """A node configured with 6 slots that runs 2 and refuses the rest, like our node with
    ``max_queue: 0``."""
    settings = replace(NO_HEDGE, stream=stream, max_attempts=1)
    node = FakeNode(delay=1.0, parallel=2, refuse_beyond=2)
    engine, records = await run_engine({1: node}, make_work(24), settings=settings, slots=6)
    assert_each_item_once(records, 24)
    assert all(r["status"] == "ok" for r in records)
    assert engine.nodes[0].errors == 0 and engine.nodes[0].busy > 0
    assert engine.finished_at - engine.started_at <= 24 / 2 + 3


async def test_adaptive_mode_settles_on_a_node_that_refuses_past_its_slots(
    autojump_clock: Any,
) -> None:
    settings = replace(NO_HEDGE, adaptive=True, max_slots=8, max_attempts=1)
    node = FakeNode(delay=1.0, parallel=2, refuse_beyond=2)
    engine, records = await run_engine({1: node}, make_work(200), settings=settings)
    assert_each_item_once(records, 200)
    assert all(r["status"] == "ok" for r in records)
    assert engine.nodes[0].errors == 0
    assert engine.finished_at - engine.started_at <= 200 / 2 * 1.2


async def test_a_benched_node_that_answers_busy_is_readmitted(autojump_clock: Any) -> None:
    async def busy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "1"}, json={"error": "busy"})

    spec = NodeSpec("n", "http://127.0.0.1:9")
    state = NodeState(spec, health=Health.benched, consecutive_failures=3)
    notified: list[bool] = []
    client = NodeClient(
        spec.base_url,
        name=spec.name,
        api=Api.textsynth,
        connect_timeout=1.0,
        stall_timeout=5.0,
        max_connections=1,
        transport=httpx.MockTransport(busy),
    )
    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: probe_benched(
                state,
                client,
                SETTINGS,
                engine_id="m",
                style=Style.completion,
                benched=trio.Event,
                notify=lambda: notified.append(True),
            )
        )
        await trio.sleep(SETTINGS.probe_interval + 0.5)
        nursery.cancel_scope.cancel()
    assert state.health is Health.admitted and notified == [True]
