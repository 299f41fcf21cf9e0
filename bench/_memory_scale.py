"""The runner at scale: ``python -m bench._memory_scale rss|resume``.

``rss``: the peak RSS (``VmHWM``) of the whole ``python -m runner`` (:mod:`bench._memory_runner`)
over inputs of ``--sizes`` items (default 10,000, 1,000,000 and 10,000,000) on 4 instant
simulated nodes. Inputs larger than ``--send`` (default 100,000) are planned, scanned (every
id compared, every prompt rendered) and resumed whole, then the run is stopped with SIGTERM
once ``--send`` results are in: what grows with the input is all paid, and the sending, whose
memory does not grow, is cut short. Target: at most 1.25 times the smallest size's figure.

``resume``: opening the store of a ``--lines``-line journal (default 10,000,000; records shaped
like the runner's, about 1 KB each), each step in a fresh process: the resume index built
from nothing, opened again with nothing new, caught up after ``--append`` more lines, and
keys looked up a batch at a time as ``fresh_work`` does. Target: the build at most 120 s.

Each figure comes with the machine's load average before and after; results go to
``<results-dir>/memory_scale.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from ._items import write_file
from ._memory import _child
from ._memory_child import memory_kb
from ._process import sim_server
from ._report import machine
from ._scenarios import item_stream, memory
from ._spec import ClusterSpec

_ROOT = Path(__file__).resolve().parent.parent
RSS_TARGET = 1.25
BUILD_TARGET_S = 120.0


def load() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------- rss


async def rss(sizes: list[int], send: int, workdir: Path) -> list[dict[str, Any]]:
    scenario = memory()
    spec = ClusterSpec(scenario.nodes, time_scale=1.0)
    rows: list[dict[str, Any]] = []
    async with sim_server(spec, max_seconds=4 * 3600) as server:
        nodes = [
            {"name": n.name, "base_url": server.base_urls[n.name], "slots": scenario.slots[n.name]}
            for n in scenario.nodes
        ]
        for size in sizes:
            items = workdir / f"items-{size}.jsonl"
            await trio.to_thread.run_sync(write_file, items, item_stream(size))
            stop = send if size > send else None
            before = load()
            report = await _child(
                "runner", items, nodes, scenario.settings, workdir / str(size), stop_after=stop
            )
            row = {
                "items": size,
                "sent_until": stop,
                "peak_rss_mb": round(report["peak_rss_kb"] / 1024, 1),
                "rss_before_run_mb": round(report["baseline_rss_kb"] / 1024, 1),
                "answered": report["finals"],
                "requests": report["requests"],
                "process_wall_s": round(report["process_wall_s"], 1),
                "run_wall_s": report["wall_s"],
                "cpu_s": round(report["cpu_s"], 1),
                "load_before": before,
                "load_after": load(),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            items.unlink()
    return rows


# ---------------------------------------------------------------- resume

_ANSWER = "Once upon a time " * 21  # ~350 characters, the answer and the raw text


def write_store(path: Path, lines: int, *, start: int = 0) -> None:
    """A store of ``lines`` accepted records shaped like the runner's (about 1 KB each)."""
    answer = json.dumps(_ANSWER)
    with path.open("a", encoding="utf-8") as out:
        for i in range(start, start + lines):
            key = hashlib.sha256(str(i).encode()).hexdigest()
            out.write(
                f'{{"id":"{i}","index":{i},"key":"{key}","status":"ok","input":{{"id":"{i}",'
                f'"prompt":"Write a short story about a comet (#{i}).","tokens":120}},'
                f'"answer":{answer},"text":{answer},"repair":null,"node":"n{i % 4 + 1}",'
                f'"seed":{i},"attempts":1,"seeds":[{i}],"errors":[],"input_tokens":31,'
                f'"output_tokens":120,"finish_reason":"stop","truncated_prompt":false,'
                f'"latency_s":0.0123}}\n'
            )


def key_of(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def open_store(store: Path, lookups: int) -> dict[str, Any]:
    """In this process: open the store (timed), then look ``lookups`` keys up (timed)."""
    from runner._journal import Store
    from runner._resume_index import LOOKUP_BATCH

    before = memory_kb("VmRSS")
    read = [0]
    started = time.monotonic()
    with Store(store, progress=lambda done, total: read.__setitem__(0, total)) as opened:
        opened_s = time.monotonic() - started
        started = time.monotonic()
        found = 0
        for first in range(0, lookups, LOOKUP_BATCH):
            batch = [key_of(i) for i in range(first, min(first + LOOKUP_BATCH, lookups))]
            found += len(opened.get_many(batch))
        lookup_s = time.monotonic() - started
    return {
        "open_s": round(opened_s, 2),
        "bytes_read": read[0],
        "lookups": lookups,
        "found": found,
        "lookup_s": round(lookup_s, 2),
        "rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(memory_kb("VmHWM") / 1024, 1),
    }


def step(store: Path, lookups: int = 0) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    before = load()
    done = subprocess.run(
        [sys.executable, "-m", "bench._memory_scale", "open", str(store), str(lookups)],
        capture_output=True, text=True, env=env, check=True, timeout=3600,
    )  # fmt: skip
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    row |= {"load_before": before, "load_after": load()}
    print(json.dumps(row), flush=True)
    return row


def resume(lines: int, append: int, lookups: int, workdir: Path) -> dict[str, Any]:
    store = workdir / "scale.jsonl"
    started = time.monotonic()
    write_store(store, lines)
    written = time.monotonic() - started
    print(f"store: {lines:,} lines, {store.stat().st_size / 1e9:.1f} GB in {written:.0f} s")
    built = step(store)
    again = step(store, lookups)
    write_store(store, append, start=lines)
    caught_up = step(store)
    index = store.with_name("scale.index.sqlite")
    return {
        "lines": lines,
        "store_gb": round(store.stat().st_size / 1e9, 2),
        "index_gb": round(index.stat().st_size / 1e9, 2),
        "build": built,
        "open_again_and_lookups": again,
        "catch_up": {"appended": append, **caught_up},
    }


# ---------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._memory_scale", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    p_rss = sub.add_parser("rss")
    p_rss.add_argument("--sizes", default="10000,1000000,10000000")
    p_rss.add_argument("--send", type=int, default=100_000)
    p_resume = sub.add_parser("resume")
    p_resume.add_argument("--lines", type=int, default=10_000_000)
    p_resume.add_argument("--append", type=int, default=100_000)
    p_resume.add_argument("--lookups", type=int, default=1_000_000)
    for p in (p_rss, p_resume):
        p.add_argument("--results-dir", type=Path, default=_ROOT / "bench" / "results")
        p.add_argument("--workdir", type=Path, help="where inputs and journals go (default TMPDIR)")
    p_open = sub.add_parser("open")  # one step of ``resume``, in its own process
    p_open.add_argument("store", type=Path)
    p_open.add_argument("lookups", type=int)
    args = parser.parse_args(argv)
    if args.what == "open":
        print(json.dumps(open_store(args.store, args.lookups)))
        return
    path = args.results_dir / "memory_scale.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = machine()
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.workdir) as tmp:
        if args.what == "rss":
            sizes = [int(s) for s in args.sizes.split(",")]
            rows = trio.run(rss, sizes, args.send, Path(tmp))
            smallest = rows[0]["peak_rss_mb"]
            for row in rows:
                row["ratio_to_smallest"] = round(row["peak_rss_mb"] / smallest, 3)
            results["rss"] = {"target_ratio": RSS_TARGET, "send": args.send, "runs": rows}
        else:
            found = resume(args.lines, args.append, args.lookups, Path(tmp))
            results["resume"] = {"target_build_s": BUILD_TARGET_S, **found}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
