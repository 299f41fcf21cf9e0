"""``python -m bench.real_adaptive``: the runner's adaptive concurrency against a sweep of
fixed slots, on the real local cluster.

Per round, interleaved: for each ``--slots`` value S, a fresh local cluster of ``--nodes``
nodes × ``--threads`` threads whose nodes run S sequences, and the runner with S requests in
flight per node (the slots the nodes say); then ``adaptive``: nodes running the largest S,
``engine.adaptive=true`` with ``engine.max_slots`` that S, so the runner searches each node's
best in-flight count while the job runs. The job is ``--job`` over ``--items`` titles
(``prompts/movies.txt`` repeated, each repeat marked, so every prompt is new). Prints
tokens/s of each, medians, and adaptive / best fixed; ``--out`` writes JSON.
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

from bench.real_model import through_runner

_ROOT = Path(__file__).resolve().parent.parent


def titles_file(folder: Path, count: int) -> Path:
    """``count`` titles from prompts/movies.txt, repeated with a marker: ``Heat (2)``."""
    films = [t for t in (_ROOT / "prompts/movies.txt").read_text().splitlines() if t.strip()]
    lines = [
        films[i % len(films)] + (f" ({i // len(films) + 1})" if i >= len(films) else "")
        for i in range(count)
    ]
    path = folder / "titles.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.real_adaptive", description=__doc__)
    parser.add_argument("--job", default="movie_synopsis")
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slots", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sweep = [int(x) for x in args.slots.split(",")]
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="real-adaptive-") as tmp:
        titles = titles_file(Path(tmp), args.items)
        inputs = [f"job.input.path={titles}"]
        settings = [(str(s), s, inputs) for s in sweep]
        adaptive = [*inputs, "engine.adaptive=true", f"engine.max_slots={max(sweep)}"]
        settings.append(("adaptive", max(sweep), adaptive))
        for round_ in range(args.rounds):
            for label, slots, extra in settings:
                with tempfile.TemporaryDirectory(dir=tmp) as work:
                    figures = through_runner(
                        args.job, args.nodes, args.threads, slots, Path(work), extra
                    )
                runs.setdefault(label, []).append(figures)
                print(
                    f"round {round_ + 1} slots {label}: {figures['tokens_per_s']:.1f} tokens/s "
                    f"({figures['wall_s']:.1f} s, {figures['ok']}/{figures['items']} ok)",
                    flush=True,
                )
    medians = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    best = max((k for k in medians if k != "adaptive"), key=lambda k: medians[k])
    ratio = medians["adaptive"] / medians[best]
    for label, value in medians.items():
        print(f"median slots {label}: {value:.1f} tokens/s")
    print(f"adaptive / best fixed ({best} slots): {ratio:.3f}")
    load_after = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    if args.out:
        result = {"load_before": load_before, "load_after": load_after, "runs": runs,
                  "medians": medians, "best_fixed": best, "adaptive_over_best": ratio}  # fmt: skip
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
