"""Where nodes come from and how many requests each takes at once: configured slots win, the
others are asked of the node before the run, and a node that does not say gets engine.slots."""

from __future__ import annotations

import logging
import re
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from runner._cluster import RollCall, answering_nodes, describe_slots, remote_nodes, roll_call
from runner._config import ClusterConfig, ClusterKind, EngineConfig, NodeConfig
from runner._engine import Engine
from runner._errors import ClusterUnavailable, ConfigError
from runner._nodes import NodeSpec, SlotsFrom
from runner._request import Api, Style
from tests.fakecluster import FakeCluster, FakeNode
from tests.test_engine import make_work

ENGINE = EngineConfig(slots=3, startup_timeout=2.0)


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


async def call(nodes: dict[int, FakeNode], configured: list[NodeSpec]) -> RollCall:
    transport = FakeCluster({f"127.0.0.1:{p}": n for p, n in nodes.items()})
    return await roll_call(
        configured, api=Api.textsynth, engine_id="m", settings=ENGINE, transport=transport
    )


async def ask(nodes: dict[int, FakeNode], configured: list[NodeSpec]) -> list[NodeSpec]:
    return (await call(nodes, configured)).nodes


async def test_unset_slots_are_taken_from_the_node_and_configured_ones_are_kept(
    autojump_clock: Any,
) -> None:
    asked, configured = FakeNode(reports_slots=8), FakeNode(reports_slots=8)
    resolved = await ask({1: asked, 2: configured}, specs((1, None), (2, 2)))
    assert [(s.slots, s.slots_from) for s in resolved] == [
        (8, SlotsFrom.node),
        (2, SlotsFrom.config),
    ]
    assert asked.gets == configured.gets == ["/v1/engines", "/health"]  # both answer the call
    assert describe_slots(resolved) == (
        "127.0.0.1:1 (8 slots, node), 127.0.0.1:2 (2 slots, config)"
    )


async def test_a_node_that_does_not_say_gets_engine_slots(autojump_clock: Any) -> None:
    """ts_server has no slots in its answers (here: a /health without them, no listing)."""
    silent = FakeNode()
    (resolved,) = await ask({1: silent}, specs((1, None)))
    assert (resolved.slots, resolved.slots_from) == (3, SlotsFrom.default)
    assert silent.gets == ["/v1/engines", "/health"]


async def test_unreachable_and_slow_nodes_are_down_within_the_timeout(
    autojump_clock: Any,
) -> None:
    nodes = {
        1: FakeNode(dead_from=0.0),
        2: FakeNode(reports_slots=8, health_delay=60.0),
        3: FakeNode(reports_slots=5),
    }
    start = trio.current_time()
    answers = await call(nodes, specs((1, None), (2, None), (3, None)))
    assert trio.current_time() - start == pytest.approx(ENGINE.startup_timeout)  # in parallel
    assert [(s.slots, s.slots_from.value) for s in answers.nodes] == [
        (3, "default"),
        (3, "default"),
        (5, "node"),
    ]
    assert answers.down == {
        "127.0.0.1:1": "TransportError: cannot connect: connection refused (fake node is dead)",
        "127.0.0.1:2": "no answer within engine.startup_timeout=2s",
    }


async def test_the_engine_runs_as_many_requests_at_once_as_the_node_said(
    autojump_clock: Any,
) -> None:
    node = FakeNode(delay=1.0, reports_slots=4)
    transport = FakeCluster({"127.0.0.1:1": node})
    resolved = (
        await roll_call(
            specs((1, None)), api=Api.textsynth, engine_id="m", settings=ENGINE, transport=transport
        )
    ).nodes
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
    assert (line.slots, line.slots_from, line.limit) == (4, "node", 4)


def test_a_run_with_no_node_answering_names_each_address_and_error() -> None:
    nodes = specs((1, None), (2, None))
    down = {"127.0.0.1:1": "TransportError: refused", "127.0.0.1:2": "no answer within 5s"}
    with pytest.raises(ClusterUnavailable) as caught:
        answering_nodes(RollCall(nodes, down), max_tokens=10)
    assert str(caught.value) == (
        "no node answers: 127.0.0.1:1 (http://127.0.0.1:1): TransportError: refused; "
        "127.0.0.1:2 (http://127.0.0.1:2): no answer within 5s"
    )


def test_a_run_with_some_nodes_down_starts_on_all_and_says_which(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nodes = specs((1, None), (2, None))
    with caplog.at_level(logging.WARNING, logger="runner"):
        assert answering_nodes(RollCall(nodes, {"127.0.0.1:2": "refused"}), max_tokens=9) == nodes
    assert "not answering, benched until they do: 127.0.0.1:2 (http://127.0.0.1:2)" in caplog.text


def test_max_tokens_past_a_nodes_context_is_refused_before_anything_is_sent() -> None:
    answers = RollCall(specs((1, None)), contexts={"127.0.0.1:1": 2048})
    assert answering_nodes(answers, max_tokens=2047)
    with pytest.raises(
        ConfigError, match=re.escape("max_tokens=1000000 does not fit node 127.0.0.1:1's")
    ):
        answering_nodes(answers, max_tokens=1000000)


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1:8088", "http://127.0.0.1:8088"),
        ("http://127.0.0.1:8088", "http://127.0.0.1:8088"),
        ("https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
        ("http://127.0.0.1", "http://127.0.0.1:80"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_a_node_address_is_host_port_or_an_http_url(address: str, url: str) -> None:
    (spec,) = remote_nodes(static(NodeConfig(address=address)), ENGINE)
    assert spec.base_url == url


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ftp://127.0.0.1:21", "has scheme 'ftp'; expected host:port or http(s)://host:port"),
        ("http://127.0.0.1:8088/v1", "has a path, query or credentials"),
        ("http://user:pw@127.0.0.1:8088", "has a path, query or credentials"),
        ("127.0.0.1:8088/v1", "is not host:port or http(s)://host:port"),
        ("http://127.0.0.1:99999", "outside 1-65535"),
        ("http://:8080", "no host"),
    ],
)
def test_an_address_that_is_neither_form_is_refused_naming_the_forms(
    address: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"cluster.nodes[0].address: '{address}'")) as e:
        remote_nodes(static(NodeConfig(address=address)), ENGINE)
    assert message in str(e.value)


def test_adaptive_mode_starts_each_node_at_the_slots_it_said_and_the_others_at_1() -> None:
    said, silent = (
        NodeSpec(f"127.0.0.1:{p}", f"http://127.0.0.1:{p}", slots=1, slots_from=SlotsFrom.default)
        for p in (1, 2)
    )
    said = said.with_node_slots(4)
    engine = Engine(
        [said, silent],
        replace(ENGINE, adaptive=True, max_slots=8),
        api=Api.textsynth,
        style=Style.completion,
        engine_id="m",
        on_result=lambda record: None,
    )
    assert [node.limit for node in engine.nodes] == [4, 1]
