"""Permanent errors are not retried: a bad request fails its item at once, a node that
refuses us is benched, and a run whose first requests are all refused stops early."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from runner._errors import RequestsRefused
from runner._nodes import Health
from tests.fakecluster import FakeNode
from tests.test_engine import SETTINGS, make_work, run_engine


def poison(body: dict[str, Any]) -> tuple[int, str] | None:
    """Every third item (1, 4, 7, ...) is refused as a bad request, by every node."""
    index = int(body["prompt"].split()[-1])
    return (400, f"max_tokens: item {index} is too long") if index % 3 == 1 else None


async def test_a_bad_request_fails_its_item_after_one_request_and_benches_nobody(
    autojump_clock: Any,
) -> None:
    nodes = {p: FakeNode(refuse=poison) for p in (1, 2, 3)}
    engine, records = await run_engine(nodes, make_work(20))
    failed = {r["id"]: r for r in records if r["status"] == "failed"}
    assert sorted(failed) == sorted(f"id{i}" for i in range(20) if i % 3 == 1)
    assert sum(r["status"] == "ok" for r in records) == 20 - len(failed)
    for item, record in failed.items():
        assert record["attempts"] == 1
        assert f"HTTP 400: max_tokens: item {item[2:]} is too long" in record["error"]
    assert sum(len(n.requests) for n in nodes.values()) == 20
    assert all(n.health is Health.admitted and n.errors == 0 for n in engine.nodes)


async def test_a_run_whose_first_requests_all_get_the_same_4xx_stops_early(
    autojump_clock: Any,
) -> None:
    nodes = {p: FakeNode(refuse=lambda body: (400, "max_tokens: at most 2047")) for p in (1, 2)}
    with pytest.raises(RequestsRefused, match=r"first 5 requests were all refused with HTTP 400"):
        await run_engine(nodes, make_work(50))
    assert sum(len(n.requests) for n in nodes.values()) <= 6


async def test_a_few_bad_items_first_do_not_stop_the_run_once_an_answer_came(
    autojump_clock: Any,
) -> None:
    refuse = lambda body: (422, "bad") if int(body["prompt"].split()[-1]) >= 1 else None  # noqa: E731
    _, records = await run_engine({1: FakeNode(refuse=refuse)}, make_work(12))
    assert [r["status"] for r in records].count("failed") == 11  # all sent, none stopped


async def test_bad_request_stop_zero_never_stops_the_run(autojump_clock: Any) -> None:
    settings = replace(SETTINGS, bad_request_stop=0)
    nodes = {1: FakeNode(refuse=lambda body: (400, "no"))}
    _, records = await run_engine(nodes, make_work(8), settings=settings)
    assert [r["attempts"] for r in records] == [1] * 8


async def test_a_node_that_refuses_our_key_is_benched_and_its_items_served_elsewhere(
    autojump_clock: Any,
) -> None:
    nodes = {1: FakeNode(refuse=lambda body: (401, "bad key")), 2: FakeNode()}
    engine, records = await run_engine(nodes, make_work(10))
    assert all(r["status"] == "ok" and r["node"] == "127.0.0.1:2" for r in records)
    assert engine.nodes[0].health is Health.benched
    items_sent = [b for b in nodes[1].requests if b["prompt"].startswith("item")]
    assert len(items_sent) <= SETTINGS.breaker_failures
