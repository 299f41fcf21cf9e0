"""``python -m bench.preflight``: what the pre-flight costs on the real local cluster.

The job is ``movie_details`` over ``--items`` titles (``prompts/movies.txt`` repeated, each
repeat marked, so every prompt is new). On one local cluster of ``--nodes`` open nodes, each
round times, interleaved: the scan alone (every prompt rendered and measured in bytes, no
request: the floor of any count), the full count (every prompt's tokens counted with the
nodes' tokenize, ``preflight.sample=null``: what every run did before), the sampled count
(the rule runs use now: only the prompts at risk for the context, and a sample of
``preflight.sample`` of the rest, whose tokens are estimated by bytes), and the speed probe
(what a dry run adds). Prints each round, the medians, the sampled estimate's error against
the full count, and the load average before and after; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bench.real_adaptive import titles_file
from bench.real_model import job_config
from runner._cluster import remote_nodes, take_roll_call
from runner._config import PreflightConfig, RunConfig
from runner._estimate import TokenTally, estimate
from runner._local import local_cluster
from runner._nodes import NodeSpec
from runner._plan import prepare
from runner._preflight import count_tokens, probe_speeds, prompt_of
from runner._sampling import sampling_params


def _count(
    cfg: RunConfig, nodes: Sequence[NodeSpec], contexts: dict[str, int], max_tokens: int
) -> tuple[TokenTally, float]:
    """The pre-flight's count of every item of the job under ``cfg``, and its seconds."""
    tally = TokenTally(context=min(contexts.values()) if contexts else None)
    works = prepare(cfg).work()
    started = time.perf_counter()
    reason = trio.run(partial(count_tokens, works, nodes, cfg, tally, max_tokens=max_tokens))
    seconds = time.perf_counter() - started
    if reason is not None:
        raise SystemExit(f"the tokens were not all counted: {reason}")
    return tally, seconds


def one_round(
    cfg: RunConfig, nodes: Sequence[NodeSpec], contexts: dict[str, int]
) -> dict[str, Any]:
    """The scan alone, the full count, the sampled count and the speed probe; the seconds
    of each, and what the two counts found."""
    max_tokens = sampling_params(cfg.model, cfg.job)["max_tokens"]
    started = time.perf_counter()
    scanned = sum(prompt_of(work, max_tokens).bytes for work in prepare(cfg).work())
    scanning = time.perf_counter() - started
    whole_cfg = replace(cfg, preflight=replace(cfg.preflight, sample=None))
    whole, whole_s = _count(whole_cfg, nodes, contexts, max_tokens)
    sampled, sampled_s = _count(cfg, nodes, contexts, max_tokens)
    found = estimate(sampled, speeds={}, prices={})
    if found.prompt_tokens is None:
        raise SystemExit("the sampled count gave no estimate")
    requests = [work.request for _, work in zip(range(8), prepare(cfg).work(), strict=False)]
    started = time.perf_counter()
    speeds = trio.run(probe_speeds, requests, nodes, cfg)
    probing = time.perf_counter() - started
    return {
        "items": whole.items,
        "prompt_bytes": scanned,
        "scan_s": round(scanning, 3),
        "prompt_tokens": whole.prompt_tokens,
        "count_s": round(whole_s, 3),
        "items_per_s": round(whole.items / whole_s, 1),
        "sampled_prompt_tokens": found.prompt_tokens,
        "sampled_counted": found.counted,
        "sampled_at_risk": found.at_risk,
        "sampled_error_pct": round(100 * (found.prompt_tokens / whole.prompt_tokens - 1), 3),
        "sampled_count_s": round(sampled_s, 3),
        "sampled_items_per_s": round(sampled.items / sampled_s, 1),
        "probe_s": round(probing, 3),
        "tokens_per_s": round(sum(s for s in speeds.values() if s), 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.preflight", description=__doc__)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--sample", type=int, default=PreflightConfig().sample)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    print("load average before:", " ".join(f"{x:.2f}" for x in load_before))
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        titles = titles_file(tmp, args.items)
        with local_cluster(nodes=args.nodes, threads=1, parallel=4) as cluster:
            extra = [
                f"job.input.path={titles}",
                "preflight.probe_speed=always",
                "preflight.timeout=36000",  # the full count of a large job takes minutes
                f"preflight.sample={args.sample}",
            ]
            cfg = job_config("movie_details", [n.address for n in cluster], tmp, extra)
            listed = remote_nodes(cfg.cluster, cfg.engine)
            call = take_roll_call(
                listed, api=cfg.model.api, engine_id=cfg.model.engine, settings=cfg.engine
            )
            nodes = [n for n in call.nodes if n.name not in call.down]
            for i in range(args.rounds):
                figures = one_round(cfg, nodes, call.contexts)
                print(f"round {i + 1}", json.dumps(figures))
                rounds.append(figures)
    medians = {
        key: statistics.median(r[key] for r in rounds)
        for key in (
            "scan_s",
            "count_s",
            "items_per_s",
            "sampled_count_s",
            "sampled_items_per_s",
            "sampled_error_pct",
            "probe_s",
            "tokens_per_s",
        )
    }
    load_after = os.getloadavg()
    print(f"medians over {len(rounds)} rounds, {args.items} items, {args.nodes} nodes:")
    print(json.dumps(medians))
    print("load average after:", " ".join(f"{x:.2f}" for x in load_after))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "rounds": rounds,
                    "medians": medians,
                    "load_before": load_before,
                    "load_after": load_after,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
