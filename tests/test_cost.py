"""A node's price per hour, from the inventory or the inline node list, becomes the run's
measured cost in report.json, the end-of-run table, a merge of shards and report.html; a
run without prices reports exactly what it always did."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from runner._cluster import remote_nodes
from runner._config import ClusterConfig, ClusterKind, EngineConfig, NodeConfig
from runner._errors import ConfigError
from runner._inventory import read_inventory
from runner._merge import Merge, Progress, ShardRun, merged_report
from runner._nodes import NodeSpec, NodeState
from runner._progress import summary_table
from runner._report import NodeLine, RunReport, ShardLine, build_report, show_cost
from runner._report_page import cost_rows, write_report_page
from tests.test_config import load

ENGINE = EngineConfig(slots=3)


def _line(output_tokens: int, price: float | None = None) -> NodeLine:
    return NodeLine(
        url="http://127.0.0.1:1", requests=10, successes=10, errors=0, hedges=0, busy=0,
        slots=4, slots_from="config", limit=4, output_tokens=output_tokens, tokens_per_s=1.0,
        latency_p50_s=1.0, latency_p95_s=2.0, health="admitted", last_error="",
        price_per_hour=price,
    )  # fmt: skip


def _report(nodes: dict[str, NodeLine], wall_time_s: float = 1800.0) -> RunReport:
    return build_report(
        job="j", items=4, ok=4, failed=0, reused=0, requests_sent=20,
        wall_time_s=wall_time_s, nodes=nodes,
    )  # fmt: skip


def _priced() -> RunReport:
    return _report({"a": _line(1000, price=1.5), "b": _line(3000, price=0.5)})


def _text(renderable: object) -> str:
    console = Console(width=220, record=True)
    console.print(renderable)
    return console.export_text()


# --- report.json ------------------------------------------------------------------------------


def test_each_priced_node_costs_its_price_for_the_whole_wall_time() -> None:
    report = _priced()
    a, b = report.nodes["a"], report.nodes["b"]
    assert (a.cost, b.cost) == (0.75, 0.25)
    assert a.cost_per_1m_output_tokens == 750.0
    assert b.cost_per_1m_output_tokens == pytest.approx(83.33, abs=0.01)
    assert report.totals.cost == 1.0
    assert report.totals.cost_per_1m_output_tokens == 250.0


def test_report_json_has_the_cost_keys_after_the_totals_and_on_priced_nodes() -> None:
    data = _priced().to_json()
    assert list(data["totals"])[-2:] == ["cost", "cost_per_1m_output_tokens"]
    assert (data["totals"]["cost"], data["totals"]["cost_per_1m_output_tokens"]) == (1.0, 250.0)
    assert list(data["nodes"]["a"])[-3:] == ["price_per_hour", "cost", "cost_per_1m_output_tokens"]
    assert data["nodes"]["a"]["price_per_hour"] == 1.5 and data["nodes"]["a"]["cost"] == 0.75


def test_a_run_without_prices_writes_the_report_json_it_always_did() -> None:
    data = _report({"a": _line(1000), "b": _line(3000)}).to_json()
    assert list(data["totals"]) == [
        "items", "ok", "failed", "reused", "unfinished", "requests_sent", "output_tokens",
    ]  # fmt: skip
    for line in data["nodes"].values():
        assert not {"price_per_hour", "cost", "cost_per_1m_output_tokens"} & set(line)


def test_only_priced_nodes_carry_cost_keys_and_the_run_cost_is_their_sum() -> None:
    report = _report({"a": _line(1000, price=2.0), "local": _line(500)}, wall_time_s=900)
    data = report.to_json()
    assert "cost" not in data["nodes"]["local"] and report.nodes["local"].cost is None
    assert data["totals"]["cost"] == 0.5
    assert data["totals"]["cost_per_1m_output_tokens"] == round(0.5 / 1500 * 1e6, 3)


def test_a_priced_node_without_output_tokens_has_a_cost_but_no_cost_per_token() -> None:
    report = _report({"a": _line(0, price=1.0)}, wall_time_s=3600)
    assert report.nodes["a"].cost == 1.0
    assert report.nodes["a"].cost_per_1m_output_tokens is None
    assert report.totals.cost_per_1m_output_tokens is None
    assert report.to_json()["totals"]["cost_per_1m_output_tokens"] is None


def test_a_free_node_costs_nothing() -> None:
    report = _report({"a": _line(100, price=0.0)})
    assert (report.totals.cost, report.totals.cost_per_1m_output_tokens) == (0.0, 0.0)


def test_costs_are_rounded_to_six_significant_digits() -> None:
    report = _report({"a": _line(7, price=1.0)}, wall_time_s=1.0)
    assert report.nodes["a"].cost == 0.000277778
    assert report.nodes["a"].cost_per_1m_output_tokens == 39.6825


def test_a_node_states_line_carries_its_specs_price() -> None:
    state = NodeState(NodeSpec("a", "http://127.0.0.1:1", price_per_hour=1.25))
    assert state.stats().price_per_hour == 1.25
    assert NodeState(NodeSpec("b", "http://127.0.0.1:2")).stats().price_per_hour is None


# --- the end-of-run table ---------------------------------------------------------------------


def test_the_summary_shows_the_cost_only_when_some_node_has_a_price() -> None:
    text = _text(summary_table(_priced()))
    assert "cost 1.00 (250.00 per 1M output tokens)" in text
    assert "per 1M tok" in text and "0.75" in text and "83.33" in text
    plain = _text(summary_table(_report({"a": _line(1000)})))
    assert "cost" not in plain and "per 1M" not in plain


# --- merging shards ---------------------------------------------------------------------------


def _shard_run(index: int, report: RunReport) -> ShardRun:
    shard = ShardLine(
        index=index, count=2, source="shard", items=2, job_items=4, fingerprint="f",
        nodes="share", journal="j", output={},
    )  # fmt: skip
    return ShardRun(Path(f"/runs/s{index}"), "j", shard, report.to_json())


def _merge(*reports: RunReport) -> dict[str, Any]:
    runs = [_shard_run(i, r) for i, r in enumerate(reports)]
    return merged_report(Merge(runs, [Progress(2, 0)] * len(runs), [], []))


def test_a_merge_sums_the_shards_costs_and_recomputes_the_cost_per_token() -> None:
    first = _report({"a": _line(1000, price=1.5), "b": _line(3000, price=0.5)})
    second = _report({"a": _line(1000, price=1.5)}, wall_time_s=3600)
    merged = _merge(first, second)
    assert merged["nodes"]["a"]["cost"] == 0.75 + 1.5
    assert merged["nodes"]["a"]["cost_per_1m_output_tokens"] == 2.25 / 2000 * 1e6
    assert merged["nodes"]["b"]["cost"] == 0.25
    assert merged["totals"]["cost"] == 2.5
    assert merged["totals"]["cost_per_1m_output_tokens"] == 2.5 / 5000 * 1e6


def test_a_merge_of_shards_without_prices_has_no_cost_keys() -> None:
    merged = _merge(_report({"a": _line(10)}), _report({"a": _line(20)}))
    assert "cost" not in merged["totals"] and "cost" not in merged["nodes"]["a"]


# --- report.html ------------------------------------------------------------------------------


def test_the_page_has_a_cost_table_only_when_some_node_has_a_price(tmp_path: Path) -> None:
    rows = cost_rows(_priced())
    assert rows[-1] == {"node": "run", "price_per_hour": "2.00", "cost": "1.00", "per_1m": "250.00"}
    assert rows[0] == {"node": "a", "price_per_hour": "1.50", "cost": "0.75", "per_1m": "750.00"}
    priced, plain = tmp_path / "priced", tmp_path / "plain"
    priced.mkdir(), plain.mkdir()
    page = write_report_page(priced, _priced()).read_text()
    assert "<h2>Cost</h2>" in page and "83.33" in page
    assert "http://" not in page.replace("http://127.0.0.1:1", "")  # nothing fetched
    assert "<h2>Cost</h2>" not in write_report_page(plain, _report({"a": _line(5)})).read_text()


# --- where prices come from -------------------------------------------------------------------


def _static(*nodes: NodeConfig) -> ClusterConfig:
    return ClusterConfig(name="t", kind=ClusterKind.static, nodes=list(nodes))


def test_an_inline_nodes_price_reaches_its_spec_and_unset_is_none() -> None:
    priced, plain = remote_nodes(
        _static(NodeConfig("127.0.0.1:1", price_per_hour=0.8), NodeConfig("127.0.0.1:2")), ENGINE
    )
    assert (priced.price_per_hour, plain.price_per_hour) == (0.8, None)


@pytest.mark.parametrize(
    "price", [-0.5, math.nan, math.inf, True, "1.5"], ids=["negative", "nan", "inf", "bool", "str"]
)
def test_an_unusable_inline_price_is_one_line_naming_the_node(price: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        remote_nodes(
            _static(NodeConfig("127.0.0.1:1"), NodeConfig("127.0.0.1:2", price_per_hour=price)),
            ENGINE,
        )
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cluster.nodes[1]: price_per_hour")


def test_inventory_prices_come_from_host_data_over_group_data(tmp_path: Path) -> None:
    path = tmp_path / "inventory.py"
    path.write_text(
        "ts_servers = ([('a', {'price_per_hour': 2}), 'b', ('c', {'price_per_hour': None})],"
        " {'price_per_hour': 0.25})\n",
        encoding="utf-8",
    )
    prices = [host.price_per_hour for host in read_inventory(path)]
    assert prices == [2.0, 0.25, None]  # a host's None says it has no price
    cluster = ClusterConfig(name="lab", kind=ClusterKind.inventory, inventory=str(path))
    assert [spec.price_per_hour for spec in remote_nodes(cluster, ENGINE)] == prices


def test_ini_inventory_prices_are_parsed_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text(
        "[ts_servers]\nn1 ansible_host=10.0.0.1 price_per_hour=1.5\nn2 ansible_host=10.0.0.2\n"
        "n3 ansible_host=10.0.0.3\n[ts_servers:vars]\nprice_per_hour=0.75\n"
        "[all:vars]\nansible_user=ubuntu\n",
        encoding="utf-8",
    )
    assert [h.price_per_hour for h in read_inventory(path)] == [1.5, 0.75, 0.75]


@pytest.mark.parametrize(
    ("name", "text", "shown"),
    [
        ("inventory.py", "ts_servers = [('a', {'price_per_hour': -1})]\n", "-1"),
        ("inventory.py", "ts_servers = [('a', {'price_per_hour': 'cheap'})]\n", "'cheap'"),
        ("inventory.py", "ts_servers = [('a', {'price_per_hour': True})]\n", "True"),
        ("inventory.py", "ts_servers = [('a', {'price_per_hour': float('nan')})]\n", "nan"),
        ("hosts.ini", "[ts_servers]\na price_per_hour=inf\n", "'inf'"),
        ("hosts.ini", "[ts_servers]\na price_per_hour=$3\n", "'$3'"),
    ],
    ids=["negative", "text", "bool", "nan", "ini inf", "ini currency symbol"],
)
def test_an_unusable_inventory_price_is_one_line_naming_file_host_and_value(
    tmp_path: Path, name: str, text: str, shown: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_inventory(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{path}: host 'a': price_per_hour {shown} is not a number ≥ 0"


def test_inline_node_prices_compose_from_the_command_line() -> None:
    cfg = load(
        "job=movie_details",
        "cluster=static",
        "cluster.nodes=[{address: '127.0.0.1:8088', price_per_hour: 1.5},"
        " {address: '127.0.0.1:8089', price_per_hour: 2}]",
    )
    assert [node.price_per_hour for node in cfg.cluster.nodes] == [1.5, 2.0]
    assert [spec.price_per_hour for spec in remote_nodes(cfg.cluster, ENGINE)] == [1.5, 2.0]


def test_an_inline_price_that_is_not_a_number_fails_at_composition() -> None:
    with pytest.raises((HydraException, OmegaConfBaseException, ConfigError)) as caught:
        load(
            "job=movie_details",
            "cluster=static",
            "cluster.nodes=[{address: '127.0.0.1:8088', price_per_hour: cheap}]",
        )
    assert "price_per_hour" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "-"), (0.0, "0"), (0.75, "0.75"), (83.3333, "83.33"), (1234.5, "1,234.50"),
     (0.000209432, "0.000209"), (5.24e-05, "0.0000524")],
)  # fmt: skip
def test_a_cost_is_shown_with_cents_or_three_significant_digits_never_an_exponent(
    value: float | None, shown: str
) -> None:
    assert show_cost(value) == shown
