"""``python -m bench.real_model``: the runner over the real local cluster against the engine's
own limit, side by side in one run.

For each round, each layout (``NODESxTHREADSxSLOTS``, default ``2x1x4``: the local
cluster's default) and each job (default ``movie_details`` and ``movie_synopsis``):

1. **engine limit**: ``python -m bench.engine_limit`` in a fresh process: the node's
   engine in-process with the same layout and settings (``--reproducible``: on both
   sides), the job's requests built as the runner builds them, plain threads (slots per
   engine) calling it directly: no HTTP, no node, no runner.
2. **runner**: a fresh local cluster with that layout (``python -m runner.node`` processes)
   and the whole job through the runner (``runner._run.run``: scan, engine, journals,
   output), timed by the runner's report from the start of the run to its end.

Tokens are those of the answers kept (``results.jsonl``), counted as the node counts them.
It prints each measure as it comes, then medians per layout and job and the ratio
runner / limit; the load average before and after; ``--out`` writes it all as JSON.
Every measure is taken in the same session, interleaved, so a busy machine slows each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from rich.console import Console

from runner._checks import to_run_config
from runner._config import RunConfig, register
from runner._local import local_cluster
from runner._run import run

_ROOT = Path(__file__).resolve().parent.parent


def job_config(
    job: str, addresses: Sequence[str], workdir: Path, extra: Sequence[str] = ()
) -> RunConfig:
    """The runner's configuration for ``job`` over nodes already running at ``addresses``
    (``extra``: more overrides)."""
    listing = ", ".join(f'{{address: "{a}", name: local-{i + 1}}}' for i, a in enumerate(addresses))
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
                *extra,
            ],
        )
    return to_run_config(cfg)


def layout(text: str) -> tuple[int, int, int]:
    """``2x1x4`` → (nodes, threads, slots)."""
    nodes, threads, slots = (int(part) for part in text.split("x"))
    return nodes, threads, slots


def engine_limit(
    job: str, nodes: int, threads: int, slots: int, *, reproducible: bool = False
) -> dict[str, Any]:
    """The engine's own figures, from a fresh process."""
    command = [sys.executable, "-m", "bench.engine_limit", "--job", job]
    command += ["--reproducible"] if reproducible else []
    command += ["--nodes", str(nodes), "--threads", str(threads), "--parallel", str(slots)]
    done = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench.engine_limit failed: {done.stderr[-800:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def through_runner(
    job: str,
    nodes: int,
    threads: int,
    slots: int,
    tmp: Path,
    extra: Sequence[str] = (),
    *,
    reproducible: bool = False,
) -> dict[str, Any]:
    """The runner's figures over a fresh local cluster (``extra``: more overrides)."""
    with local_cluster(
        nodes=nodes, threads=threads, parallel=slots, reproducible=reproducible
    ) as cluster:
        cfg = job_config(job, [n.address for n in cluster], tmp, extra)
        run_dir = tmp / "run"
        outcome = run(cfg, run_dir, console=Console(stderr=True, quiet=True))
    if outcome.exit_code != 0:
        raise SystemExit(f"the runner's run failed: {outcome.summary}")
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    kept = [
        json.loads(line)
        for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    tokens = sum(int(record.get("output_tokens") or 0) for record in kept)
    wall = float(report["wall_time_s"])
    return {
        "job": job,
        "layout": f"{nodes}x{threads}x{slots}",
        "ok": report["totals"]["ok"],
        "items": report["totals"]["items"],
        "requests_sent": report["totals"]["requests_sent"],
        "wall_s": wall,
        "output_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.real_model", description=__doc__)
    parser.add_argument("--jobs", default="movie_details,movie_synopsis")
    parser.add_argument("--layouts", default="2x1x4", help="comma-separated NODESxTHREADSxSLOTS")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--reproducible", action="store_true", help="nodes with reproducible=true (both sides)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    jobs = args.jobs.split(",")
    layouts = [layout(text) for text in args.layouts.split(",")]
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}", flush=True)
    measures: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for nodes, threads, slots in layouts:
            for job in jobs:
                limit = engine_limit(job, nodes, threads, slots, reproducible=args.reproducible)
                with tempfile.TemporaryDirectory(prefix="real-model-") as tmp:
                    runner = through_runner(
                        job, nodes, threads, slots, Path(tmp), reproducible=args.reproducible
                    )
                entry: dict[str, Any] = {"round": round_ + 1, "limit": limit, "runner": runner}
                measures.append(entry)
                print(
                    f"round {round_ + 1} {job} {limit['layout']}: engine limit "
                    f"{limit['tokens_per_s']:.1f} tokens/s ({limit['wall_s']:.1f} s); runner "
                    f"{runner['tokens_per_s']:.1f} tokens/s ({runner['wall_s']:.1f} s, "
                    f"{runner['ok']}/{runner['items']} ok, {runner['requests_sent']} requests); "
                    f"ratio {runner['tokens_per_s'] / limit['tokens_per_s']:.3f}",
                    flush=True,
                )
    medians: dict[str, dict[str, float]] = {}
    for entry in measures:
        key = f"{entry['runner']['job']} {entry['runner']['layout']}"
        medians.setdefault(key, {})
    for key in medians:
        same = [e for e in measures if f"{e['runner']['job']} {e['runner']['layout']}" == key]
        limit = statistics.median(e["limit"]["tokens_per_s"] for e in same)
        runner = statistics.median(e["runner"]["tokens_per_s"] for e in same)
        ratio = statistics.median(
            e["runner"]["tokens_per_s"] / e["limit"]["tokens_per_s"] for e in same
        )
        medians[key] = {"limit_tokens_per_s": limit, "runner_tokens_per_s": runner, "ratio": ratio}
        print(
            f"median {key}: engine limit {limit:.1f}, runner {runner:.1f} tokens/s; "
            f"median ratio {ratio:.3f}"
        )
    load_after = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    if args.out:
        result = {
            "reproducible": args.reproducible,
            "load_before": load_before,
            "load_after": load_after,
            "measures": measures,
            "medians": medians,
        }
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
