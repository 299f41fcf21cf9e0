"""``python -m bench.real_model``: real tokens/s through the runner against each node alone.

Starts the local cluster (one node per core, one llama.cpp thread each, SmolLM2-135M), then
for each of ``--rounds`` rounds:

1. **alone** — for each node in turn, with the other nodes idle, a plain sequential client
   (httpx, one request at a time, whole answers) sends the first ``--solo-items`` requests
   of the job, built exactly as the runner builds them (same template, sampling parameters
   and seeds); the node's speed is its output tokens / the wall time of those requests;
2. **runner** — the whole job through the runner (``runner._run.run``: scan, engine,
   journals, output file) against the same nodes (``cluster=static`` with their addresses,
   no resume), timed from the start of the run to its report: output tokens / wall time.

3. **all at once** — the same plain clients on every node at the same time (one thread
   each): what the machine gives when every node works, with no scheduling at all.

It prints, per round and as medians, each node's speed alone, their sum, all at once, the
runner's throughput and the ratios runner / sum and runner / all at once. Every measure is
taken side by side in one session, so a busy machine slows each; the load average is
printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from hydra import compose, initialize_config_dir
from rich.console import Console

from runner._checks import to_run_config
from runner._config import RunConfig, register
from runner._local import LocalNode, local_cluster
from runner._plan import prepare
from runner._run import run
from runner._textsynth import build

_ROOT = Path(__file__).resolve().parent.parent


def job_config(job: str, nodes: Sequence[LocalNode], workdir: Path) -> RunConfig:
    """The runner's configuration for ``job`` over the already running ``nodes``."""
    listing = ", ".join(f'{{address: "{n.address}", name: {n.name}}}' for n in nodes)
    register()
    with initialize_config_dir(config_dir=str(_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"job={job}",
                "cluster=static",
                f"cluster.nodes=[{listing}]",
                "resume=false",
                f"journal_dir={workdir / 'journal'}",
                f"prompts_dir={_ROOT / 'prompts'}",
                "progress=off",
            ],
        )
    return to_run_config(cfg)


def alone(node: LocalNode, cfg: RunConfig, items: int) -> float:
    """Output tokens/s of ``node`` serving the job's first ``items`` requests one by one."""
    tokens = 0
    started = time.perf_counter()
    with httpx.Client(base_url=node.url, timeout=600) as client:
        for index, work in enumerate(prepare(cfg).work()):
            if index == items:
                break
            path, body = build(work.request, stream=False)
            answer = client.post(path, json=body)
            answer.raise_for_status()
            tokens += int(answer.json()["output_tokens"])
    return tokens / (time.perf_counter() - started)


def together(nodes: Sequence[LocalNode], cfg: RunConfig, items: int) -> float:
    """Output tokens/s of plain sequential clients on every node at once (threads): what
    the machine gives when all nodes work, with no scheduling at all."""
    speeds: dict[str, float] = {}
    threads = [
        threading.Thread(target=lambda n=n: speeds.__setitem__(n.name, alone(n, cfg, items)))
        for n in nodes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(speeds.values())


def through_runner(cfg: RunConfig, run_dir: Path) -> tuple[float, int, int]:
    """Output tokens/s of the whole job through the runner; and its ok and item counts."""
    outcome = run(cfg, run_dir, console=Console(stderr=True, quiet=True))
    if outcome.exit_code != 0:
        raise SystemExit(f"the runner's run failed: {outcome.summary}")
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    totals = report["totals"]
    return totals["output_tokens"] / report["wall_time_s"], totals["ok"], totals["items"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.real_model", description=__doc__)
    parser.add_argument("--job", default="movie_synopsis")
    parser.add_argument("--nodes", type=int, default=0, help="local nodes (0: one per core)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--solo-items", type=int, default=10, help="requests per node alone")
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    sums: list[float] = []
    runner_speeds: list[float] = []
    togethers: list[float] = []
    speeds: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="real-model-") as tmp,
        local_cluster(nodes=args.nodes, threads=1) as nodes,
    ):
        workdir = Path(tmp)
        cfg = job_config(args.job, nodes, workdir)
        for r in range(args.rounds):
            solo = {n.name: alone(n, cfg, args.solo_items) for n in nodes}
            for name, speed in solo.items():
                speeds.setdefault(name, []).append(speed)
            both = together(nodes, cfg, args.solo_items)
            speed, ok, items = through_runner(cfg, workdir / f"run-{r}")
            sums.append(sum(solo.values()))
            togethers.append(both)
            runner_speeds.append(speed)
            alone_text = ", ".join(f"{name} {s:.1f}" for name, s in solo.items())
            print(
                f"round {r + 1}: alone {alone_text} (sum {sums[-1]:.1f}) tokens/s; "
                f"plain clients on all nodes at once {both:.1f}; "
                f"runner {speed:.1f} tokens/s ({ok}/{items} ok); "
                f"ratio {speed / sums[-1]:.3f} (to all at once {speed / both:.3f})",
                flush=True,
            )
    ratios = [s / t for s, t in zip(runner_speeds, sums, strict=True)]
    medians = ", ".join(f"{name} {statistics.median(v):.1f}" for name, v in speeds.items())
    print(f"median alone: {medians} tokens/s; sum {statistics.median(sums):.1f}")
    print(f"median runner: {statistics.median(runner_speeds):.1f} tokens/s")
    print(f"median plain clients on all nodes at once: {statistics.median(togethers):.1f}")
    print(f"median ratio runner / sum of nodes alone: {statistics.median(ratios):.3f}")
    at_once = [s / t for s, t in zip(runner_speeds, togethers, strict=True)]
    print(f"median ratio runner / all nodes at once: {statistics.median(at_once):.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
