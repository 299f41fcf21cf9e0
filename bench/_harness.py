"""Runs a scenario: every strategy, side by side, ``runs`` times, each on fresh nodes.

Runs are interleaved (run 1 of every strategy, then run 2...) so that a drift of the
machine touches every strategy alike. Each run gets a fresh simulation process (the nodes'
clock starts at the run's first request) and stops by itself after ``max_run_seconds``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import trio

from . import _memory
from ._bounds import Bound
from ._nginx import NginxUnavailable
from ._outcomes import RunResult, count
from ._process import sim_server
from ._scenarios import Scenario
from ._spec import ClusterSpec
from ._strategy import Node, Strategy, Trace

Progress = Callable[[str], None]


async def run_scenario(
    scenario: Scenario,
    strategies: Mapping[str, Strategy],
    *,
    runs: int = 3,
    max_run_seconds: float = 900.0,
    in_process: bool = False,
    progress: Progress = lambda line: None,
) -> list[RunResult]:
    """Every strategy's runs of ``scenario``, in the order they ran.

    ``in_process`` serves the simulated nodes from this process (tests: no start-up cost)
    instead of a child process (benchmarks: client and nodes on separate cores).
    """
    results: list[RunResult] = []
    skip: dict[str, str] = {}
    for run in range(runs):
        for name, strategy in strategies.items():
            if name in skip:
                results.append(RunResult(name, run, status="skipped", note=skip[name]))
                continue
            if scenario.kind == "memory":
                result = await _memory.run_memory(scenario, name, run, in_process=in_process)
            else:
                result = await run_once(
                    scenario, name, strategy, run, max_run_seconds, in_process=in_process
                )
            if result.status == "skipped":
                skip[name] = result.note
            results.append(result)
            progress(_line(scenario, result))
    return results


async def run_once(
    scenario: Scenario,
    name: str,
    strategy: Strategy,
    run: int,
    max_run_seconds: float,
    *,
    in_process: bool = False,
) -> RunResult:
    """One run of one strategy on fresh simulated nodes."""
    result = RunResult(name, run)
    settings = scenario.settings
    spec = ClusterSpec(scenario.nodes, time_scale=settings.time_scale)
    traces: list[Trace] = []
    limit = max_run_seconds + 60
    async with sim_server(spec, in_process=in_process, max_seconds=limit) as server:
        nodes = [
            Node(n.name, server.base_urls[n.name], scenario.slots[n.name]) for n in scenario.nodes
        ]
        load = os.getloadavg()[0]
        cpu = time.process_time()
        start = trio.current_time()
        with trio.move_on_after(max_run_seconds) as deadline:
            try:
                await strategy(nodes, scenario.items, settings, traces.append)
            except (NotImplementedError, NginxUnavailable) as exc:
                result.status, result.note = "skipped", str(exc)
                return result
        result.wall_s = trio.current_time() - start
        result.cpu_s = time.process_time() - cpu
        result.sim_cpu_s = server.cpu_seconds()
        result.load = (load, os.getloadavg()[0])
        if deadline.cancelled_caught:
            result.status, result.note = "timeout", f"stopped after {max_run_seconds:g} s"
    result.node_log = server.log()
    result.node_requests = len(result.node_log)
    count(result, (i.id for i in scenario.items), traces)
    if result.makespan is not None:
        result.makespan /= settings.time_scale
        bound: Bound = scenario.bound()
        if bound.seconds > 0:
            result.ratio = result.makespan / bound.seconds
    return result


def _line(scenario: Scenario, r: RunResult) -> str:
    if r.status == "skipped":
        return f"{scenario.name} {r.strategy}: skipped ({r.note})"
    parts = [f"{scenario.name} run {r.run + 1} {r.strategy}:"]
    if r.ratio is not None:
        parts.append(f"ratio {r.ratio:.2f}")
    if r.makespan is not None and scenario.kind == "makespan":
        parts.append(f"makespan {r.makespan:.0f} s")
    if scenario.kind == "overhead" and r.requests_per_s:
        parts.append(f"{r.requests_per_s:.0f} req/s, {r.cpu_ms_per_request:.2f} ms CPU/req")
    for size, mb in sorted(r.peak_rss_mb.items()):
        parts.append(f"peak RSS {mb:.0f} MB @ {size:,}")
    parts.append(f"ok {r.ok}/{r.items}, failed {r.failed}, lost {r.lost}, requests {r.requests}")
    if r.status != "done":
        parts.append(f"[{r.status}: {r.note}]")
    return " ".join(parts)
