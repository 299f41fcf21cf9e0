"""``python -m bench.journal_sync``: what ``engine.journal_fsync=true`` costs the event loop.

A run journals each result twice (the store, then ``results.jsonl``). With ``journal_fsync``
each line must reach the disk. This appends ``--lines`` records of a real result's size to
two journals in a temporary folder on the disk under test (``--dir``, default the project's
``outputs/``), one pair every ``--every`` seconds (the pace of answers arriving), from a trio
task, in two ways, rounds interleaved:

- ``inline``: every append syncs the file itself, on the event loop (as before this change,
  and still when nothing runs :meth:`runner._journal.Journal.keep_synced`);
- ``grouped``: :meth:`~runner._journal.Journal.keep_synced` runs beside the writer and syncs
  in a worker thread, one sync per group of lines.

Reported per run: the event loop's time inside ``append`` per line (what the engine cannot
spend on answers), the syncs made, and the wall time. Every run is bounded by its line count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from runner._journal import Journal

from ._report import emit

RECORD = {
    "id": "item-000001",
    "status": "ok",
    "key": "0" * 64,
    "answer": {"title": "x" * 40, "year": 1994, "genres": ["drama", "comedy"]},
    "text": "y" * 400,
    "node": "127.0.0.1:8088",
    "seed": 1,
    "latency_s": 1.234,
}


async def one_run(folder: Path, mode: str, lines: int, every: float) -> dict[str, Any]:
    syncs = 0
    real_fsync = os.fsync

    def counted(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real_fsync(fd)

    os.fsync = counted  # counts the syncs of both journals (restored below)
    try:
        store = Journal(folder / f"{mode}.store.jsonl", fsync=True)
        results = Journal(folder / f"{mode}.results.jsonl", fsync=True)
        blocked = 0.0
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            if mode == "grouped":
                await nursery.start(store.keep_synced)
                await nursery.start(results.keep_synced)
            for n in range(lines):
                record = {**RECORD, "id": f"item-{n:06d}"}
                before = time.perf_counter()
                store.append(record)
                results.append(record)
                blocked += time.perf_counter() - before
                await trio.sleep(every)
            nursery.cancel_scope.cancel()
        store.close()
        results.close()
        wall = time.perf_counter() - started
    finally:
        os.fsync = real_fsync
    return {
        "mode": mode,
        "lines": 2 * lines,
        "loop_us_per_line": 1e6 * blocked / (2 * lines),
        "syncs": syncs,
        "wall_s": wall,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.journal_sync", description=__doc__)
    parser.add_argument("--lines", type=int, default=2000, help="results per run (x2 lines)")
    parser.add_argument("--every", type=float, default=0.001, help="seconds between results")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("outputs"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="journal-sync-") as tmp:
        for round_ in range(args.rounds):
            for mode in ("inline", "grouped"):
                row = trio.run(one_run, Path(tmp), mode, args.lines, args.every)
                row["round"] = round_ + 1
                rows.append(row)
                for name in Path(tmp).iterdir():
                    name.unlink()
                print(
                    f"{mode} round {round_ + 1}: {row['loop_us_per_line']:.0f} us of the event "
                    f"loop per line, {row['syncs']} syncs for {row['lines']} lines, "
                    f"{row['wall_s']:.2f} s",
                    flush=True,
                )
    medians = {
        mode: {
            key: statistics.median(r[key] for r in rows if r["mode"] == mode)
            for key in ("loop_us_per_line", "syncs", "wall_s")
        }
        for mode in ("inline", "grouped")
    }
    result = {
        "lines_per_run": 2 * args.lines,
        "every_s": args.every,
        "runs": rows,
        "medians": medians,
        "load_before_after": [load, os.getloadavg()],
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
