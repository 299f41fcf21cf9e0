"""The benchmark harness: a tiny version of every scenario runs and loses no item.

No timing is asserted here: these runs are seconds long on a shared machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

import bench
from bench import SCENARIOS, STRATEGIES, SimCluster, SimNodeSpec, SimTransport
from bench.__main__ import main
from bench._bounds import lower_bound
from bench._nginx import nginx_binary, render_config
from bench._outcomes import RunResult, count
from bench._strategies import strategies_for
from bench._strategy import Node, Settings, Trace

TINY: dict[str, dict[str, Any]] = {
    "heterogeneous": {"items": 16, "time_scale": 0.001},
    "node_death": {"items": 16, "time_scale": 0.001},
    "node_hang": {"items": 16, "time_scale": 0.001},
    "straggler": {"items": 16, "time_scale": 0.001},
    "adaptive": {"items": 16, "time_scale": 0.001},
    "overhead": {"items": 40},
    "memory": {"items": 40, "small": 10},
}


def test_every_scenario_has_a_tiny_version() -> None:
    assert set(TINY) == set(SCENARIOS)


MAIN = ("roundrobin", "nginx", "engine")
CASES = sorted(
    {(name, s) for name in SCENARIOS for s in (*MAIN, *SCENARIOS[name](**TINY[name]).strategies)}
    | {("heterogeneous", s) for s in STRATEGIES}
)  # every scenario with the main strategies and its own list; every variant on one scenario


# httpcore leaves a request body's async generator unclosed when a request is cancelled
# while its body is being sent (a timeout, a hedge that lost); trio then warns when the
# generator is collected. Nothing is lost; the warning is httpx's, not the strategy's.
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected"
    ":ResourceWarning"
)
@pytest.mark.parametrize(("name", "strategy"), CASES)
async def test_tiny_scenario_runs_and_loses_no_item(name: str, strategy: str) -> None:
    if strategy == "nginx" and nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    scenario = SCENARIOS[name](**TINY[name])
    with trio.fail_after(60):
        (result,) = await bench.run_scenario(
            scenario,
            {strategy: strategies_for(scenario)[strategy]},
            runs=1,
            max_run_seconds=30,
            in_process=True,
        )
    assert result.status == "done", result.note
    expected = TINY[name]["items"]
    assert result.items == expected
    assert result.lost == 0
    assert result.ok + result.failed == expected
    if scenario.kind == "memory":
        assert set(result.peak_rss_mb) == {10, 40}
    else:
        assert {e.item for e in result.node_log if e.item is not None} <= {
            i.id for i in scenario.items
        }


async def test_baselines_run_in_virtual_time_through_the_sim_transport(
    autojump_clock: trio.abc.Clock,
) -> None:
    scenario = SCENARIOS["node_death"](items=40, time_scale=1.0)
    cluster = SimCluster(scenario.nodes)
    nodes = [Node(n.spec.name, url, n.spec.slots) for n, url in zip(
        cluster.nodes.values(), cluster.base_urls.values(), strict=True
    )]  # fmt: skip
    traces: list[Trace] = []
    await bench.roundrobin(
        nodes, scenario.items, scenario.settings, traces.append, transport=SimTransport(cluster)
    )
    result = RunResult("roundrobin", 0)
    count(result, [i.id for i in scenario.items], traces)
    assert (result.lost, result.ok + result.failed) == (0, 40)
    assert {e.outcome for e in cluster.log} >= {"ok", "died"}


def test_lower_bound_is_capacity_or_longest_item() -> None:
    a = SimNodeSpec("a", speed=10, slots=2)  # 20 tokens/s
    b = SimNodeSpec("b", speed=30, slots=1, prompt_latency=1)  # 30 tokens/s
    assert lower_bound([a, b], [100] * 10).seconds == pytest.approx(1000 / 50)
    assert lower_bound([a, b], [600]).seconds == pytest.approx(1 + 600 / 30)


def test_lower_bound_counts_a_dying_node_until_it_dies() -> None:
    a = SimNodeSpec("a", speed=10)
    dying = SimNodeSpec("b", speed=10, die_at=10)
    # 10 s of both (200 tokens), then a alone: 1000 tokens need 10 + 800 / 10 = 90 s.
    assert lower_bound([a, dying], [10] * 100).seconds == pytest.approx(90)
    recovering = SimNodeSpec("b", speed=10, hang_from=10, recover_at=20)
    assert lower_bound([a, recovering], [10] * 100).seconds == pytest.approx(55)


def test_count_finds_lost_and_failed_items() -> None:
    traces = [
        Trace("1", "n1", 0.0, 1.0, "timeout"),
        Trace("1", "n1", 1.0, 2.0, "ok", 5, final=True),
        Trace("2", "n2", 0.0, 3.0, "status", final=True),
    ]
    result = RunResult("x", 0)
    count(result, ["1", "2", "3"], traces)
    assert (result.ok, result.failed, result.lost, result.requests) == (1, 1, 1, 3)
    assert result.makespan == 3.0


def test_nginx_config_balances_least_conn_without_buffering(tmp_path: Path) -> None:
    nodes = [Node("n1", "http://127.0.0.1:5001"), Node("n2", "http://127.0.0.1:5002")]
    text = render_config(nodes, Settings(time_scale=0.01), port=6000, prefix=tmp_path)
    assert "least_conn;" in text
    assert "proxy_buffering off;" in text
    assert "listen 127.0.0.1:6000;" in text
    assert "server 127.0.0.1:5002 max_fails=1 fail_timeout=1s;" in text
    assert "proxy_read_timeout 600ms;" in text  # nginx's 60 s, scaled


def test_exported_names_are_sorted_and_exist() -> None:
    assert bench.__all__ == sorted(bench.__all__, key=lambda n: (not n.isupper(), n))
    for name in bench.__all__:
        assert hasattr(bench, name), name


def test_cli_writes_results_and_a_timeline(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    main([
        "heterogeneous", "--items", "12", "--time-scale", "0.002", "--runs", "1",
        "--strategies", "roundrobin", "--results-dir", str(tmp_path), "--img-dir", str(tmp_path),
    ])  # fmt: skip
    data = json.loads((tmp_path / "heterogeneous.json").read_text())
    assert data["median"]["roundrobin"]["lost"] == 0
    assert data["lower_bound_s"]["seconds"] > 0
    assert (tmp_path / "heterogeneous_timeline.png").stat().st_size > 10_000


def test_the_journal_sync_benchmark_compares_both_ways_and_keeps_every_line(
    tmp_path: Path,
) -> None:
    from bench import journal_sync

    out = tmp_path / "journal_sync.json"
    journal_sync.main(
        [
            "--lines",
            "20",
            "--every",
            "0",
            "--rounds",
            "1",
            "--dir",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    runs = {run["mode"]: run for run in data["runs"]}
    assert set(runs) == {"inline", "grouped"}
    assert runs["inline"]["syncs"] == 40  # one per line on the event loop
    assert 1 <= runs["grouped"]["syncs"] <= 40
    assert not list(tmp_path.glob("journal-sync-*"))  # its temporary files are gone
