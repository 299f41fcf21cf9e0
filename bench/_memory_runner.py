"""The memory scenario's ``runner`` strategy: the whole runner, as a user runs it.

``python -m bench._memory_runner --items F --nodes JSON --workdir D`` runs
``python -m runner`` in this process over the items of ``F`` (a JSON-lines file written by
:func:`bench._items.write_file`) against the given nodes (``cluster=static``), with
everything a real run does: the input scan, Jinja2 rendering, the engine, both journals,
``report.json`` and a consolidated ``mapping`` output. It prints one JSON line like
:mod:`bench._memory_child`: counts, times, the RSS before the run and the peak RSS.

``--stop-after N`` ends the run the way an operator would, once ``results.jsonl`` holds
``N`` lines: a thread watching the file sends this process SIGTERM, which the runner handles
as Ctrl-C (the requests in flight cancelled, the journals, ``report.json`` and the output
written; exit 143). A ten-million-item run is thus planned, scanned and resumed whole, and
sends its first ``N`` items only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._memory_child import memory_kb


def overrides(items: Path, nodes: list[dict[str, Any]], workdir: Path) -> list[str]:
    """The command line of the run (after ``python -m runner``)."""
    listing = ", ".join(
        f'{{address: "{n["base_url"].removeprefix("http://")}", slots: {n["slots"]}, '
        f"name: {n['name']}}}"
        for n in nodes
    )
    return [
        "job=movie_synopsis",
        "cluster=static",
        f"cluster.nodes=[{listing}]",
        "model.engine=sim",
        "model.style=completion",
        "job.name=bench_memory",
        "job.template=bench.j2",
        f"job.input.path={items}",
        "job.input.format=jsonl",
        "job.input.id_field=id",
        "job.max_tokens=512",
        "job.output.filename=answers.json",
        "job.output.shape=mapping",
        "job.output.key_field=id",
        f"prompts_dir={workdir / 'prompts'}",
        f"journal_dir={workdir / 'journal'}",
        f"hydra.run.dir={workdir / 'run'}",
        "progress=off",
    ]


EXIT_TERMINATED = 143  # what the runner returns after SIGTERM


def stop_when_written(results: Path, lines: int, *, done: threading.Event) -> None:
    """Send this process SIGTERM once ``results`` holds ``lines`` lines (the thread of
    ``--stop-after``); reads only the bytes appended since its last look."""
    seen = offset = 0
    while not done.wait(0.2):
        try:
            with results.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            continue
        offset += len(chunk)
        seen += chunk.count(b"\n")
        if seen >= lines:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def measure(
    items: Path, nodes: list[dict[str, Any]], workdir: Path, *, stop_after: int | None = None
) -> dict[str, Any]:
    prompts = workdir / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    (prompts / "bench.j2").write_text("{{ prompt }}", encoding="utf-8")
    sys.argv = ["runner", *overrides(items, nodes, workdir)]
    before = memory_kb("VmRSS")
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    done = threading.Event()
    if stop_after is not None:
        watch = (workdir / "run" / "results.jsonl", stop_after)
        threading.Thread(target=stop_when_written, args=watch, kwargs={"done": done}).start()
    started = time.monotonic()
    try:  # exactly what ``python -m runner`` does (Hydra finds conf/ from __main__'s file)
        runpy.run_module("runner", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        done.set()
    elapsed = time.monotonic() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    peak = memory_kb("VmHWM")
    expected = 0 if stop_after is None else EXIT_TERMINATED
    if code not in (0, expected) or not (workdir / "run" / "report.json").exists():
        raise SystemExit(f"python -m runner {' '.join(sys.argv[1:])} failed: exit {code}")
    report = json.loads((workdir / "run" / "report.json").read_text(encoding="utf-8"))
    totals = report["totals"]
    return {
        "exit_code": code,
        "items": totals["items"],
        "ok": totals["ok"],
        "failed": totals["failed"],
        "finals": totals["ok"] + totals["failed"],
        "requests": totals["requests_sent"],
        "outcomes": {},
        "wall_s": report["wall_time_s"],
        "process_wall_s": elapsed,  # the scan included
        "cpu_s": used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime,
        "baseline_rss_kb": before,
        "peak_rss_kb": peak,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._memory_runner")
    parser.add_argument("--items", type=Path, required=True)
    parser.add_argument("--nodes", required=True, help="JSON list of {name, base_url, slots}")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--stop-after", type=int, help="SIGTERM once this many results are in")
    args = parser.parse_args(argv)
    report = measure(args.items, json.loads(args.nodes), args.workdir, stop_after=args.stop_after)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
