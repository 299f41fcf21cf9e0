"""The memory scenario's ``runner`` strategy: the whole runner, as a user runs it.

``python -m bench._memory_runner --items F --nodes JSON --workdir D`` runs
``python -m runner`` in this process over the items of ``F`` (a JSON-lines file written by
:func:`bench._items.write_file`) against the given nodes (``cluster=static``), with
everything a real run does: the input scan, Jinja2 rendering, the engine, both journals,
``report.json`` and a consolidated ``mapping`` output. It prints one JSON line like
:mod:`bench._memory_child`: counts, times, the RSS before the run and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import runpy
import sys
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


def measure(items: Path, nodes: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    prompts = workdir / "prompts"
    prompts.mkdir(parents=True, exist_ok=True)
    (prompts / "bench.j2").write_text("{{ prompt }}", encoding="utf-8")
    sys.argv = ["runner", *overrides(items, nodes, workdir)]
    before = memory_kb("VmRSS")
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    try:  # exactly what ``python -m runner`` does (Hydra finds conf/ from __main__'s file)
        runpy.run_module("runner", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    used = resource.getrusage(resource.RUSAGE_SELF)
    peak = memory_kb("VmHWM")
    if code != 0 or not (workdir / "run" / "report.json").exists():
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
        "cpu_s": used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime,
        "baseline_rss_kb": before,
        "peak_rss_kb": peak,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._memory_runner")
    parser.add_argument("--items", type=Path, required=True)
    parser.add_argument("--nodes", required=True, help="JSON list of {name, base_url, slots}")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    report = measure(args.items, json.loads(args.nodes), args.workdir)
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
