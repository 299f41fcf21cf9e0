"""``python -m bench.candidates``: k candidates from one request (``job.candidates``) against
one answer per request, on the real local cluster.

The job is ``movie_details`` over ``--items`` titles (``prompts/movies.txt`` repeated, each
repeat marked, so every prompt is new), validated against ``bench/candidates.schema.json``:
stricter than the job's own schema and sent without constrained decoding
(``model.schema_decoding=false``), so a small model's first answer often fails. Per round,
interleaved, each ``--candidates`` value k runs on a fresh local cluster of ``--nodes`` ×
``--threads`` running ``--slots`` sequences. Prints requests sent, answers generated
(requests × k), items ok, output tokens and wall time of each run, then the medians, and the
load average before and after; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.real_adaptive import titles_file
from bench.real_model import job_config
from runner._local import local_cluster
from runner._run import run

SCHEMA = Path(__file__).resolve().parent / "candidates.schema.json"


def one_run(
    k: int, titles: Path, tmp: Path, *, nodes: int, threads: int, slots: int, max_tokens: int
) -> dict[str, Any]:
    """The figures of one run with ``job.candidates=k`` on a fresh local cluster."""
    extra = [
        f"job.input.path={titles}",
        f"job.schema={SCHEMA}",
        "model.schema_decoding=false",
        f"job.candidates={k}",
        f"job.max_tokens={max_tokens}",
    ]
    with local_cluster(nodes=nodes, threads=threads, parallel=slots) as cluster:
        cfg = job_config("movie_details", [n.address for n in cluster], tmp, extra)
        run_dir = tmp / "run"
        outcome = run(cfg, run_dir, console=Console(stderr=True, quiet=True))
    if outcome.exit_code not in (0, 1):  # 1: some items failed, which is what is measured
        raise SystemExit(f"the runner's run failed: {outcome.summary}")
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    records = [
        json.loads(line)
        for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    won = [r.get("candidate", 0) for r in records if r["status"] == "ok"]
    tokens = int(report["totals"].get("output_tokens") or 0)
    sent = int(report["totals"]["requests_sent"])
    return {
        "candidates": k,
        "items": report["totals"]["items"],
        "ok": report["totals"]["ok"],
        "requests_sent": sent,
        "answers_generated": sent * k,
        "output_tokens": tokens,
        "wall_s": float(report["wall_time_s"]),
        "winning_candidate_max": max(won, default=0),
        "won_after_candidate_0": sum(1 for c in won if c > 0),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.candidates", description=__doc__)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--candidates", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    ks = [int(x) for x in args.candidates.split(",")]
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}", flush=True)
    runs: dict[int, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-candidates-") as tmp:
        titles = titles_file(Path(tmp), args.items)
        for round_ in range(args.rounds):
            for k in ks:
                with tempfile.TemporaryDirectory(dir=tmp) as work:
                    figures = one_run(
                        k, titles, Path(work), nodes=args.nodes, threads=args.threads,
                        slots=args.slots, max_tokens=args.max_tokens,
                    )  # fmt: skip
                runs.setdefault(k, []).append(figures)
                print(f"round {round_ + 1} {json.dumps(figures)}", flush=True)
    keys = ("requests_sent", "answers_generated", "ok", "output_tokens", "wall_s")
    medians = {k: {f: statistics.median(r[f] for r in v) for f in keys} for k, v in runs.items()}
    print("| candidates | requests sent | answers generated | items ok | output tokens | wall s |")
    print("|---|---|---|---|---|---|")
    for k, m in medians.items():
        print(
            f"| {k} | {m['requests_sent']:g} | {m['answers_generated']:g} | "
            f"{m['ok']:g}/{args.items} | {m['output_tokens']:g} | {m['wall_s']:.1f} |"
        )
    load_after = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    if args.out:
        result = {"load_before": load_before, "load_after": load_after, "runs": runs,
                  "medians": medians}  # fmt: skip
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
