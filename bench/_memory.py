"""The memory scenario: the peak RSS of a strategy's process over a small and a large input.

Each measurement runs the strategy in a fresh child process (:mod:`bench._memory_child`)
that reads its items lazily from a generated JSON-lines file and counts its traces instead
of keeping them, so the figure is the strategy's own footprint. The ``runner`` entry runs
the whole runner over the same file instead (:mod:`bench._memory_runner`): scan, templates,
engine, journals, report and consolidated output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from ._items import write_file
from ._outcomes import RunResult
from ._process import sim_server
from ._scenarios import Scenario, item_stream
from ._spec import ClusterSpec
from ._strategy import Settings

_REPO_ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 3600.0  # real seconds one measurement may take (ten million items: ~20 min)
RUNNER = "runner"  # the whole runner (python -m runner), not a strategy: bench._memory_runner


async def run_memory(
    scenario: Scenario, name: str, run: int, *, in_process: bool = False
) -> RunResult:
    """Measure strategy ``name`` over each of ``scenario.sizes`` items (the counts are
    those of the last, largest input)."""
    result = RunResult(name, run)
    spec = ClusterSpec(scenario.nodes, time_scale=scenario.settings.time_scale)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        limit = len(scenario.sizes) * CHILD_TIMEOUT
        async with sim_server(spec, in_process=in_process, max_seconds=limit) as server:
            nodes = [
                {"name": n.name, "base_url": server.base_urls[n.name],
                 "slots": scenario.slots[n.name]}
                for n in scenario.nodes
            ]  # fmt: skip
            for size in scenario.sizes:
                path = Path(tmp) / f"items-{size}.jsonl"
                await trio.to_thread.run_sync(write_file, path, item_stream(size))
                report = await _child(name, path, nodes, scenario.settings, Path(tmp) / str(size))
                if "skipped" in report:
                    result.status, result.note = "skipped", report["skipped"]
                    return result
                result.peak_rss_mb[size] = report["peak_rss_kb"] / 1024
                result.items, result.ok = report["items"], report["ok"]
                result.failed, result.lost = report["failed"], report["items"] - report["finals"]
                result.requests, result.outcomes = report["requests"], report["outcomes"]
                result.wall_s, result.cpu_s = report["wall_s"], report["cpu_s"]
                baseline = report["baseline_rss_kb"] / 1024
                result.note = f"RSS before the run: {baseline:.0f} MB"
    return result


async def _child(
    strategy: str,
    items: Path,
    nodes: list[dict[str, Any]],
    settings: Settings,
    workdir: Path,
    *,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """One measurement in a fresh process; ``stop_after`` (the runner only) ends the run
    with SIGTERM once that many results are written (:mod:`bench._memory_runner`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    if strategy == RUNNER:
        command = [
            sys.executable, "-m", "bench._memory_runner", "--items", str(items),
            "--nodes", json.dumps(nodes), "--workdir", str(workdir),
        ]  # fmt: skip
        if stop_after is not None:
            command += ["--stop-after", str(stop_after)]
    else:
        command = [
            sys.executable, "-m", "bench._memory_child", "--strategy", strategy,
            "--items", str(items), "--nodes", json.dumps(nodes),
            "--settings", json.dumps(settings.__dict__),
        ]  # fmt: skip
    with trio.fail_after(CHILD_TIMEOUT):
        done = await trio.run_process(
            command, capture_stdout=True, stdin=subprocess.DEVNULL, env=env, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"memory run of {strategy} failed with exit code {done.returncode}")
    last: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return last
