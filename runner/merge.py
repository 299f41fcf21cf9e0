"""``python -m runner.merge RUN_DIR... [--out DIR] [--allow-incomplete] [--input PATH]``: the
shards of a job (``shard=I/N``, a Slurm array, a Kubernetes Indexed Job: docs/scale.md) →
the job's one output file (an OpenAI Batch job's: ``batch_output.jsonl`` and
``batch_errors.jsonl``), ``results.jsonl`` and ``report.json``, as an unsharded run would
have written.

Each ``RUN_DIR`` is a shard's run directory, or a folder holding them (``outputs/runs/big``
for ``outputs/runs/big/shard-0``...). The merge goes to ``--out``, by default
``<job>_merged`` in the shards' common folder; it never writes into a shard's directory, and
merging again gives the same files. It refuses, naming them, shards of different jobs or
work, a shard given twice, and missing or incomplete shards (items failed or unfinished);
``--allow-incomplete`` merges what there is (a list has ``null`` where an item is missing;
an OpenAI Batch job's files still have every line, one without a result as ``not_finished``,
named by the job's input file: the shards', or ``--input PATH``; a file that is not there or
not the one the shards ran is refused).

Exit status: 0 merged, every item accepted; 1 merged with ``--allow-incomplete`` and items
missing; 2 refused, nothing written (one line says why); 5 a file could not be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._errors import ConfigError, StorageError
from ._merge import check_out, check_shards, default_out, find_shards, merge_input, write_merge
from ._outcome import EXIT_CONFIG, EXIT_FAILED_ITEMS, EXIT_OK, EXIT_STORAGE


def main(argv: list[str] | None = None) -> int:
    """Merge the shards named in ``argv``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m runner.merge",
        description="Merge the run directories of a job's shards into its one output.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, help="where the merge goes (default: <job>_merged)")
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="merge even when shards are missing or items failed (exit 1)",
    )
    parser.add_argument(
        "--input",
        type=Path,
        metavar="PATH",
        help="a batch job's input file, to name the lines without a result (default: the "
        "shards' own, as their report.json names it)",
    )
    args = parser.parse_args(argv)
    try:
        runs = find_shards(args.run_dirs)
        merge = check_shards(runs, allow_incomplete=args.allow_incomplete)
        source = merge_input(merge, args.input)
        out = check_out(args.out or default_out(merge.runs), merge.runs)
        output = write_merge(merge, out, source=source)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    first = merge.first
    ok = sum(p.ok for p in merge.progress)
    where = output or out / "results.jsonl"
    print(
        f"{merge.runs[0].job}: merged {len(merge.runs)} of {first.count} shards, "
        f"{ok}/{first.job_items} ok -> {where}"
    )
    for problem in merge.problems:
        print(f"incomplete: {problem}", file=sys.stderr)
    return EXIT_FAILED_ITEMS if merge.problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
