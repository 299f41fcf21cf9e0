"""``python -m bench.wide``: the engine on wide clusters (hundreds to a thousand nodes).

``virtual`` runs the engine (and the round-robin baseline) over ``--nodes`` simulated
nodes × 4 slots in *virtual time*: the nodes are served in this process through
:class:`~bench._transport.SimTransport` and trio's ``MockClock`` jumps over every wait, so
this machine's CPU does not distort the makespan. Speeds cycle through the heterogeneous
cluster's 6-50 tokens/s per slot; one node in twenty dies or hangs (alternately) at 30 % of
the lower bound. Reported per run: makespan / lower bound, items lost, requests, and hedged
duplicates as a share of requests (a hedge's losing copy is one ``hedge_lost`` trace).

``real`` runs the same wide cluster in *real time* with real sockets: the simulated nodes
are served by a child process on 127.0.0.1 (:func:`bench._process.sim_server`), the engine
runs in this process, and the CPU of both is measured, so a figure limited by the simulator
rather than the runner shows as such. ``--time-scale`` stretches or shrinks the simulated
seconds (1.0: real seconds).

``cpu`` measures what the runner's engine costs in CPU per request as the cluster widens:
``--widths`` clusters of instant nodes (4 slots each) served by a child process on
127.0.0.1 (real sockets), the engine in this process, ``resource.getrusage`` of this
process around the run; figures are CPU milliseconds per 1,000 requests.

Loopback only; every run is bounded in items and time.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing

from ._bounds import lower_bound
from ._cluster import SimCluster
from ._engine_adapter import run_engine_strategy
from ._harness import run_once
from ._items import Item
from ._outcomes import RunResult, count
from ._process import sim_server
from ._report import emit
from ._roundrobin import roundrobin
from ._scenarios import MAX_TOKENS, Scenario, item_stream
from ._spec import ClusterSpec, SimNodeSpec
from ._strategy import Node, Settings, Strategy, Trace
from ._transport import SimTransport

SPEEDS = (6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 40.0, 50.0)  # tokens/s per slot, as heterogeneous
SLOTS = 4
FAIL_EVERY = 20  # one node in twenty dies or hangs
FAIL_AT = 0.3  # ... at this share of the lower bound
STRATEGIES: dict[str, Strategy] = {
    "engine": run_engine_strategy,
    "engine_nohedge": partial(run_engine_strategy, hedge=False),
    "roundrobin": roundrobin,
}


def wide_nodes(count: int, items: Sequence[Item], *, failures: bool = True) -> list[SimNodeSpec]:
    """``count`` nodes × 4 slots, speeds cycling 6-50 tokens/s; with ``failures`` every
    twentieth node dies (odd ones) or hangs (even ones) at 30 % of the lower bound."""
    nodes = [
        SimNodeSpec(
            f"n{i + 1}",
            speed=SPEEDS[i % len(SPEEDS)],
            slots=SLOTS,
            prompt_latency=10.0 / SPEEDS[i % len(SPEEDS)],
        )
        for i in range(count)
    ]
    if not failures:
        return nodes
    at = round(FAIL_AT * lower_bound(nodes, _tokens(items)).seconds, 1)
    for n, spec in enumerate(nodes[FAIL_EVERY - 1 :: FAIL_EVERY]):
        index = nodes.index(spec)
        nodes[index] = replace(spec, die_at=at) if n % 2 == 0 else replace(spec, hang_from=at)
    return nodes


def _tokens(items: Sequence[Item]) -> list[int]:
    return [min(i.tokens, MAX_TOKENS) for i in items]


def hedges(result: RunResult) -> int:
    """Hedged duplicates: each hedge leaves exactly one losing copy."""
    return result.outcomes.get("hedge_lost", 0)


async def _virtual_run(
    name: str, nodes: list[SimNodeSpec], items: Sequence[Item], settings: Settings
) -> tuple[RunResult, list[Trace]]:
    cluster = SimCluster(nodes, time_scale=1.0)
    urls = cluster.base_urls
    traces: list[Trace] = []
    result = RunResult(name, 0)
    cpu = time.process_time()
    wall = time.monotonic()
    await STRATEGIES[name](
        [Node(n.name, urls[n.name], n.slots) for n in nodes],
        items,
        settings,
        traces.append,
        transport=SimTransport(cluster),
    )
    result.wall_s = time.monotonic() - wall
    result.cpu_s = time.process_time() - cpu
    count(result, (i.id for i in items), traces)
    bound = lower_bound(nodes, _tokens(items)).seconds
    if result.makespan is not None and bound > 0:
        result.ratio = result.makespan / bound
    return result, traces


def _row(name: str, run: int, result: RunResult) -> dict[str, Any]:
    """One run's figures, as the results JSON keeps them."""
    return {
        "strategy": name,
        "round": run + 1,
        "ratio": result.ratio,
        "makespan_s": result.makespan,
        "items": result.items,
        "ok": result.ok,
        "failed": result.failed,
        "lost": result.lost,
        "requests": result.requests,
        "hedges": hedges(result),
        "hedge_share": hedges(result) / result.requests if result.requests else None,
        "outcomes": result.outcomes,
        "real_s": result.wall_s,
    }


def virtual(args: argparse.Namespace) -> dict[str, Any]:
    """Makespan, losses and hedges of each strategy on the wide cluster, virtual time."""
    items = list(item_stream(args.items, seed=args.seed))
    nodes = wide_nodes(args.nodes, items, failures=not args.no_failures)
    settings = Settings(time_scale=1.0, max_tokens=MAX_TOKENS)
    rows: list[dict[str, Any]] = []
    for run in range(args.rounds):
        for name in args.strategies:
            clock = trio.testing.MockClock(autojump_threshold=0)
            result, _ = trio.run(_virtual_run, name, nodes, items, settings, clock=clock)
            row = _row(name, run, result) | {"cpu_s": result.cpu_s}
            rows.append(row)
            print(_line(row), flush=True)
    return {
        "mode": "virtual",
        "nodes": args.nodes,
        "slots_per_node": SLOTS,
        "items": args.items,
        "failing_nodes": 0 if args.no_failures else args.nodes // FAIL_EVERY,
        "lower_bound_s": lower_bound(nodes, _tokens(items)).seconds,
        "runs": rows,
        "medians": _medians(rows, ("ratio", "hedge_share", "lost", "requests")),
    }


def _line(row: dict[str, Any]) -> str:
    share = row["hedge_share"]
    return (
        f"{row['strategy']} round {row['round']}: "
        + (f"ratio {row['ratio']:.3f}" if row["ratio"] is not None else "no ratio")
        + f", lost {row['lost']}, "
        f"requests {row['requests']}, hedges {row['hedges']}"
        + (f" ({100 * share:.2f} %)" if share is not None else "")
        + f", real {row['real_s']:.0f} s"
    )


def _medians(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in {r["strategy"] for r in rows}:
        mine = [r for r in rows if r["strategy"] == name]
        out[name] = {
            k: statistics.median(r[k] for r in mine if r[k] is not None)
            for k in keys
            if any(r[k] is not None for r in mine)
        }
    return out


def real(args: argparse.Namespace) -> dict[str, Any]:
    """Makespan on the wide cluster in real time, nodes in a child process; the CPU seconds
    of the runner (this process) and of the simulator (the child) per run."""
    items = tuple(item_stream(args.items, seed=args.seed))
    nodes = tuple(wide_nodes(args.nodes, items, failures=not args.no_failures))
    scenario = Scenario(
        "wide",
        "makespan",
        f"{args.nodes} nodes x {SLOTS} slots, speeds 6-50 tokens/s, real time",
        nodes,
        items,
        Settings(time_scale=args.time_scale, max_tokens=MAX_TOKENS),
        {n.name: n.slots for n in nodes},
    )
    rows: list[dict[str, Any]] = []
    for run in range(args.rounds):
        for name in args.strategies:
            result = trio.run(run_once, scenario, name, STRATEGIES[name], run, args.max_seconds)
            row = _row(name, run, result) | {
                "status": result.status,
                "runner_cpu_s": result.cpu_s,
                "simulator_cpu_s": result.sim_cpu_s,
                "load_before_after": result.load,
            }
            rows.append(row)
            print(
                _line(row)
                + f", CPU runner {result.cpu_s:.0f} s, simulator {result.sim_cpu_s or 0:.0f} s",
                flush=True,
            )
    return {
        "mode": "real",
        "nodes": args.nodes,
        "slots_per_node": SLOTS,
        "items": args.items,
        "time_scale": args.time_scale,
        "failing_nodes": 0 if args.no_failures else args.nodes // FAIL_EVERY,
        "lower_bound_s": scenario.bound().seconds,
        "runs": rows,
        "medians": _medians(rows, ("ratio", "hedge_share", "lost", "requests")),
    }


async def _cpu_run(width: int, requests: int) -> dict[str, Any]:
    specs = [SimNodeSpec(f"n{i + 1}", speed=None, slots=SLOTS) for i in range(width)]
    items = list(item_stream(requests, seed=1))
    settings = Settings(time_scale=1.0, max_tokens=MAX_TOKENS)
    traces: list[Trace] = []
    async with sim_server(ClusterSpec(tuple(specs), time_scale=1.0), max_seconds=600) as server:
        nodes = [Node(s.name, server.base_urls[s.name], SLOTS) for s in specs]
        before = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic()
        sim_before = server.cpu_seconds() or 0.0
        await run_engine_strategy(nodes, items, settings, traces.append)
        wall = time.monotonic() - wall
        after = resource.getrusage(resource.RUSAGE_SELF)
        sim_cpu = (server.cpu_seconds() or 0.0) - sim_before
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sent = sum(1 for t in traces if t.outcome != "no_node")
    return {
        "nodes": width,
        "requests": sent,
        "runner_cpu_ms_per_1000": 1e6 * cpu / sent,
        "simulator_cpu_ms_per_1000": 1e6 * sim_cpu / sent,
        "wall_s": wall,
        "max_rss_mb": after.ru_maxrss / 1024,
    }


def cpu(args: argparse.Namespace) -> dict[str, Any]:
    """Runner CPU per 1,000 requests at each width, rounds interleaved."""
    rows: list[dict[str, Any]] = []
    for run in range(args.rounds):
        for width in args.widths:
            row = trio.run(_cpu_run, width, args.requests)
            row["round"] = run + 1
            rows.append(row)
            print(
                f"{width} nodes round {run + 1}: runner {row['runner_cpu_ms_per_1000']:.0f} ms "
                f"CPU per 1,000 requests (simulator {row['simulator_cpu_ms_per_1000']:.0f}), "
                f"{row['wall_s']:.1f} s",
                flush=True,
            )
    medians = {
        str(width): statistics.median(
            r["runner_cpu_ms_per_1000"] for r in rows if r["nodes"] == width
        )
        for width in args.widths
    }
    return {"mode": "cpu", "requests": args.requests, "runs": rows, "median_ms_per_1000": medians}


async def _startup_run(width: int) -> dict[str, Any]:
    from runner._cluster import roll_call
    from runner._config import EngineConfig
    from runner._engine import Engine
    from runner._nodes import NodeSpec
    from runner._request import Api, Style

    specs = [SimNodeSpec(f"n{i + 1}", speed=None, slots=SLOTS) for i in range(width)]
    async with sim_server(ClusterSpec(tuple(specs), time_scale=1.0), max_seconds=600) as server:
        nodes = [NodeSpec(s.name, server.base_urls[s.name]) for s in specs]
        settings = EngineConfig()
        started = time.monotonic()
        call = await roll_call(nodes, api=Api.textsynth, engine_id="sim", settings=settings)
        probe_s = time.monotonic() - started
        fds_before = len(os.listdir("/proc/self/fd"))
        rss_before = _rss_mb()
        engine = Engine(
            call.nodes, settings, api=Api.textsynth, style=Style.completion,
            engine_id="sim", on_result=lambda record: None,
        )  # fmt: skip
        # Three items per slot: every node's pool opens its connections.
        peak = [0, 0.0]

        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], len(os.listdir("/proc/self/fd")))
                peak[1] = max(peak[1], _rss_mb())
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            await engine.run(iter(_work_for(3 * width * SLOTS)), size=None)
            nursery.cancel_scope.cancel()
        fds = int(peak[0]) - fds_before
        rss = peak[1] - rss_before
    return {
        "nodes": width,
        "roll_call_s": probe_s,
        "down": len(call.down),
        "engine_peak_extra_fds": fds,
        "engine_peak_rss_growth_mb": rss,
        "rss_kb_per_node": 1024 * rss / width,
    }


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _work_for(count: int) -> list[Any]:
    from ._engine_adapter import _work

    return list(_work(item_stream(count, seed=1), Settings(time_scale=1.0, max_tokens=MAX_TOKENS)))


def startup(args: argparse.Namespace) -> dict[str, Any]:
    """The roll call of every node in parallel, and what open pools cost per node."""
    rows = []
    for width in args.widths:
        row = trio.run(_startup_run, width)
        rows.append(row)
        print(
            f"{width} nodes: roll call {row['roll_call_s']:.2f} s ({row['down']} down), "
            f"{row['engine_peak_extra_fds']} descriptors and "
            f"{row['rss_kb_per_node']:.0f} KB RSS per node at most while running",
            flush=True,
        )
    return {"mode": "startup", "runs": rows}


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",")]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wide", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    v = sub.add_parser("virtual", help="makespan on a wide cluster in virtual time")
    v.add_argument("--nodes", type=int, default=1000)
    v.add_argument("--items", type=int, default=40_000)
    v.add_argument("--rounds", type=int, default=1)
    v.add_argument("--seed", type=int, default=1)
    v.add_argument("--no-failures", action="store_true", help="no node dies or hangs")
    v.add_argument("--strategies", type=lambda s: s.split(","), default=["engine", "roundrobin"])
    r = sub.add_parser("real", help="makespan on a wide cluster in real time, real sockets")
    r.add_argument("--nodes", type=int, default=200)
    r.add_argument("--items", type=int, default=8_000)
    r.add_argument("--rounds", type=int, default=1)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--time-scale", type=float, default=1.0)
    r.add_argument("--max-seconds", type=float, default=900.0, help="stop a run after this")
    r.add_argument("--no-failures", action="store_true", help="no node dies or hangs")
    r.add_argument("--strategies", type=lambda s: s.split(","), default=["engine"])
    c = sub.add_parser("cpu", help="runner CPU per request at several widths")
    c.add_argument("--widths", type=_ints, default=[10, 100, 1000])
    c.add_argument("--requests", type=int, default=20_000)
    c.add_argument("--rounds", type=int, default=3)
    u = sub.add_parser("startup", help="roll call time and pool cost per node")
    u.add_argument("--widths", type=_ints, default=[10, 100, 1000])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    modes = {"virtual": virtual, "real": real, "cpu": cpu, "startup": startup}
    result = modes[args.mode](args)
    result["load_before_after"] = [load, os.getloadavg()]
    emit(result, args.out)


if __name__ == "__main__":
    main()
