"""Where nodes come from and how many requests each takes at once: configured slots win, the
others are asked of the node before the run, and a node that does not say gets engine.slots."""

from __future__ import annotations

import logging
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from runner._cluster import ask_slots, describe_slots, remote_nodes
from runner._config import ClusterConfig, ClusterKind, EngineConfig, NodeConfig
from runner._engine import Engine
from runner._errors import ConfigError
from runner._nodes import NodeSpec, SlotsFrom
from runner._request import Api, Style
from tests.fakecluster import FakeCluster, FakeNode
from tests.test_engine import make_work

ENGINE = EngineConfig(slots=3, slots_timeout=2.0)


def static(*nodes: NodeConfig) -> ClusterConfig:
    return ClusterConfig(name="t", kind=ClusterKind.static, nodes=list(nodes))


def test_inline_slots_come_from_the_config_and_unset_ones_are_the_default() -> None:
    cluster = static(NodeConfig("127.0.0.1:1", slots=2), NodeConfig("127.0.0.1:2"))
    configured, unset = remote_nodes(cluster, ENGINE)
    assert (configured.slots, configured.slots_from) == (2, SlotsFrom.config)
    assert (unset.slots, unset.slots_from) == (3, SlotsFrom.default)


def test_inventory_hosts_without_slots_are_the_default(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        textwrap.dedent(
            """
            ts_servers = [("a", {"ssh_hostname": "10.0.0.5", "slots": 4}), "10.0.0.6"]
            """
        ),
        encoding="utf-8",
    )
    cluster = ClusterConfig(name="lab", kind=ClusterKind.inventory, inventory=str(inventory))
    a, b = remote_nodes(cluster, ENGINE)
    assert (a.slots, a.slots_from, b.slots, b.slots_from) == (
        4,
        SlotsFrom.config,
        3,
        SlotsFrom.default,
    )


def test_configured_slots_below_one_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"cluster.nodes\[0\]: slots must be at least 1, got 0"):
        remote_nodes(static(NodeConfig("127.0.0.1:1", slots=0)), ENGINE)


@pytest.mark.parametrize(
    ("spec", "reported", "expected"),
    [
        (NodeSpec("n", "http://h:1", 3, slots_from=SlotsFrom.default), 8, (8, SlotsFrom.node)),
        (
            NodeSpec("n", "http://h:1", 3, slots_from=SlotsFrom.default),
            None,
            (3, SlotsFrom.default),
        ),
        (NodeSpec("n", "http://h:1", 2, slots_from=SlotsFrom.config), 8, (2, SlotsFrom.config)),
    ],
    ids=["asked", "silent", "configured-wins"],
)
def test_a_nodes_own_slots_replace_only_the_default(
    spec: NodeSpec, reported: int | None, expected: tuple[int, SlotsFrom]
) -> None:
    resolved = spec.with_node_slots(reported)
    assert (resolved.slots, resolved.slots_from) == expected


def specs(*entries: tuple[int, int | None]) -> list[NodeSpec]:
    """Nodes on 127.0.0.1 ports; slots ``None`` means not configured."""
    return [
        NodeSpec(
            f"127.0.0.1:{port}",
            f"http://127.0.0.1:{port}",
            ENGINE.slots if slots is None else slots,
            slots_from=SlotsFrom.default if slots is None else SlotsFrom.config,
        )
        for port, slots in entries
    ]


async def ask(nodes: dict[int, FakeNode], configured: list[NodeSpec]) -> list[NodeSpec]:
    transport = FakeCluster({f"127.0.0.1:{p}": n for p, n in nodes.items()})
    return await ask_slots(
        configured, api=Api.textsynth, engine_id="m", settings=ENGINE, transport=transport
    )


async def test_unset_slots_are_asked_of_the_node_and_configured_ones_are_not(
    autojump_clock: Any,
) -> None:
    asked, configured = FakeNode(reports_slots=8), FakeNode(reports_slots=8)
    resolved = await ask({1: asked, 2: configured}, specs((1, None), (2, 2)))
    assert [(s.slots, s.slots_from) for s in resolved] == [
        (8, SlotsFrom.node),
        (2, SlotsFrom.config),
    ]
    assert (asked.gets, configured.gets) == (["/health"], [])
    assert describe_slots(resolved) == (
        "127.0.0.1:1 (8 slots, node), 127.0.0.1:2 (2 slots, config)"
    )


async def test_a_node_that_does_not_say_gets_engine_slots(autojump_clock: Any) -> None:
    """ts_server has no slots in its answers (here: a /health without them, no listing)."""
    silent = FakeNode()
    (resolved,) = await ask({1: silent}, specs((1, None)))
    assert (resolved.slots, resolved.slots_from) == (3, SlotsFrom.default)
    assert silent.gets == ["/health", "/v1/engines"]


async def test_unreachable_and_slow_nodes_keep_engine_slots_within_the_timeout(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = {
        1: FakeNode(dead_from=0.0),
        2: FakeNode(reports_slots=8, health_delay=60.0),
        3: FakeNode(reports_slots=5),
    }
    start = trio.current_time()
    with caplog.at_level(logging.WARNING, logger="runner"):
        resolved = await ask(nodes, specs((1, None), (2, None), (3, None)))
    assert trio.current_time() - start == pytest.approx(ENGINE.slots_timeout)  # in parallel
    assert [(s.slots, s.slots_from.value) for s in resolved] == [
        (3, "default"),
        (3, "default"),
        (5, "node"),
    ]
    assert "127.0.0.1:1: could not ask its slots" in caplog.text
    assert "127.0.0.1:2: did not say its slots within slots_timeout=2s" in caplog.text


async def test_the_engine_runs_as_many_requests_at_once_as_the_node_said(
    autojump_clock: Any,
) -> None:
    node = FakeNode(delay=1.0, reports_slots=4)
    transport = FakeCluster({"127.0.0.1:1": node})
    resolved = await ask_slots(
        specs((1, None)), api=Api.textsynth, engine_id="m", settings=ENGINE, transport=transport
    )
    records: list[dict[str, Any]] = []
    engine = Engine(
        resolved,
        replace(ENGINE, hedge=False, stream=False),
        api=Api.textsynth,
        style=Style.completion,
        engine_id="m",
        on_result=records.append,
        transport=transport,
    )
    await engine.run(iter(make_work(12)))
    assert len(records) == 12
    assert engine.finished_at - engine.started_at == pytest.approx(3.0, abs=0.5)  # 12 / 4
    line = engine.nodes[0].stats()
    assert (line["slots"], line["slots_from"], line["limit"]) == (4, "node", 4)
