"""The node check (``job=probe``): what it says about each node, slots included."""

from __future__ import annotations

from typing import Any

import pytest

from runner._config import JobConfig, JobKind, ModelConfig, RunConfig
from runner._nodes import NodeSpec, SlotsFrom
from runner._probe import ProbeResult, probe_node, slots_cell
from tests.fakecluster import FakeCluster, FakeNode

CFG = RunConfig(
    model=ModelConfig(name="m", engine="m"),
    job=JobConfig(name="probe", kind=JobKind.probe),
)


def spec(slots: int, slots_from: SlotsFrom) -> NodeSpec:
    return NodeSpec("127.0.0.1:1", "http://127.0.0.1:1", slots, slots_from=slots_from)


@pytest.mark.parametrize(
    ("node", "configured", "expected"),
    [
        (FakeNode(reports_slots=4), spec(1, SlotsFrom.default), (4, "node", 4)),
        (FakeNode(reports_slots=4), spec(2, SlotsFrom.config), (2, "config", 4)),
        (FakeNode(), spec(1, SlotsFrom.default), (1, "default", None)),
    ],
    ids=["node-says", "config-wins-and-the-node-is-shown", "ts-server-silent"],
)
async def test_probe_reports_the_slots_a_run_would_use_and_what_the_node_says(
    autojump_clock: Any, node: FakeNode, configured: NodeSpec, expected: tuple[Any, ...]
) -> None:
    result = await probe_node(configured, CFG, transport=FakeCluster({"127.0.0.1:1": node}))
    assert result.reachable, result.error
    assert (result.slots, result.slots_from, result.node_slots) == expected


async def test_an_unreachable_node_keeps_its_configured_slots(autojump_clock: Any) -> None:
    node = FakeNode(dead_from=0.0)
    result = await probe_node(
        spec(3, SlotsFrom.config), CFG, transport=FakeCluster({"127.0.0.1:1": node})
    )
    assert not result.reachable and "TransportError" in (result.error or "")
    assert (result.slots, result.slots_from, result.node_slots) == (3, "config", None)


@pytest.mark.parametrize(
    ("slots", "slots_from", "node_slots", "cell"),
    [
        (4, "node", 4, "4 (node)"),
        (1, "default", None, "1 (default)"),
        (2, "config", None, "2 (config)"),
        (2, "config", 2, "2 (config)"),
        (2, "config", 8, "2 (config; node: 8)"),
    ],
)
def test_the_slots_column_names_the_source_and_a_disagreeing_node(
    slots: int, slots_from: str, node_slots: int | None, cell: str
) -> None:
    result = ProbeResult(
        node="n", url="u", reachable=True, slots=slots, slots_from=slots_from, node_slots=node_slots
    )
    assert slots_cell(result) == cell
