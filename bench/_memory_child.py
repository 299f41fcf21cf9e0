"""The child process of the memory scenario: ``python -m bench._memory_child``.

Runs one strategy over items read lazily from a file, counts its traces (one byte per item,
not a set of ids) and prints one JSON line: counts, times, the RSS before the run and the
peak RSS. Peak RSS is the kernel's ``VmHWM`` of this process image: ``ru_maxrss`` would
carry over the parent's size from the fork that started the child.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import Any

import trio

from ._items import read_file
from ._strategies import STRATEGIES
from ._strategy import Node, Settings, Trace


def memory_kb(field: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in KiB, from /proc (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB


async def measure(
    strategy_name: str, items: Path, nodes: list[Node], settings: Settings
) -> dict[str, Any]:
    """Run the strategy and report what it cost."""
    strategy = STRATEGIES[strategy_name]
    outcomes: dict[str, int] = {}
    settled = bytearray()
    totals = {"ok": 0, "failed": 0, "finals": 0, "requests": 0}

    def record(trace: Trace) -> None:
        outcomes[trace.outcome] = outcomes.get(trace.outcome, 0) + 1
        totals["requests"] += trace.outcome != "no_node"
        if trace.final:
            index = int(trace.item)
            if index >= len(settled):
                settled.extend(bytes(index + 1 - len(settled)))
            if not settled[index]:
                settled[index] = 1
                totals["finals"] += 1
                totals["ok" if trace.outcome == "ok" else "failed"] += 1

    before = memory_kb("VmRSS")
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = trio.current_time()
    try:
        await strategy(nodes, read_file(items), settings, record)
    except NotImplementedError as exc:
        return {"skipped": str(exc)}
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {
        **totals,
        "items": sum(1 for _ in read_file(items)),
        "outcomes": outcomes,
        "wall_s": trio.current_time() - start,
        "cpu_s": used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime,
        "baseline_rss_kb": before,
        "peak_rss_kb": memory_kb("VmHWM"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._memory_child")
    parser.add_argument("--strategy", required=True, choices=list(STRATEGIES))
    parser.add_argument("--items", type=Path, required=True)
    parser.add_argument("--nodes", required=True, help="JSON list of {name, base_url, slots}")
    parser.add_argument("--settings", required=True, help="JSON of bench._strategy.Settings")
    args = parser.parse_args(argv)
    nodes = [Node(**n) for n in json.loads(args.nodes)]
    settings = Settings(**json.loads(args.settings))
    report = trio.run(measure, args.strategy, args.items, nodes, settings)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
