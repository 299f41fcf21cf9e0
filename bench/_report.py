"""Reports: a rich table of the medians, and the JSON results file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ._nginx import nginx_binary
from ._outcomes import RunResult, medians
from ._scenarios import Scenario


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "nginx": _nginx_version(),
    }


def _nginx_version() -> str | None:
    binary = nginx_binary()
    if binary is None:
        return None
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")


def results_json(scenario: Scenario, results: Sequence[RunResult], *, runs: int) -> dict[str, Any]:
    """Everything about a scenario's runs, JSON-ready."""
    bound = scenario.bound() if scenario.items else None
    return {
        "scenario": scenario.name,
        "kind": scenario.kind,
        "description": scenario.description,
        "machine": machine(),
        "runs": runs,
        "settings": scenario.settings.__dict__,
        "nodes": [n.to_json() for n in scenario.nodes],
        "configured_slots": dict(scenario.slots),
        "items": len(scenario.items) or list(scenario.sizes),
        "lower_bound_s": None if bound is None else bound.__dict__,
        "median": medians(results),
        "results": [r.to_json() for r in results],
    }


def emit(result: dict[str, Any], out: Path | None) -> None:
    """A command's results: written to ``out`` as JSON (and its path printed), else printed."""
    text = json.dumps(result, indent=1)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
    print(text if not out else f"results: {out}")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def table(scenario: Scenario, results: Sequence[RunResult]) -> Table:
    """The medians of each strategy, as a rich table."""
    title = f"{scenario.name} — {scenario.description}"
    t = Table(title=title, title_justify="left")
    t.add_column("strategy")
    t.add_column("runs", justify="right")
    rows = medians(results)
    if scenario.kind == "makespan":
        bound = scenario.bound()
        t.caption = f"lower bound {bound.seconds:.0f} simulated s; medians over runs"
        columns = [("makespan / bound", "ratio", "{:.2f}"), ("makespan s", "makespan", "{:.0f}")]
    elif scenario.kind == "overhead":
        t.caption = "client = the harness process; medians over runs"
        columns = [
            ("requests/s", "requests_per_s", "{:.0f}"),
            ("client CPU ms/request", "cpu_ms_per_request", "{:.2f}"),
        ]
    else:
        t.caption = "peak RSS of the client process; medians over runs"
        columns = [(f"peak RSS MB @ {s:,}", f"peak_rss_mb@{s}", "{:.0f}") for s in scenario.sizes]
    columns += [("ok", "ok", "{:.0f}"), ("failed", "failed", "{:.0f}"), ("lost", "lost", "{:.0f}")]
    columns += [("requests", "requests", "{:.0f}"), ("hedged %", "hedged_pct", "{:.1f}")]
    for header, _, _ in columns:
        t.add_column(header, justify="right")
    notes = []
    for name in dict.fromkeys(r.strategy for r in results):
        row = rows.get(name)
        if row is None:
            note = next((r.note for r in results if r.strategy == name and r.note), "")
            notes.append(f"{name}: {note}")
            t.add_row(name, "0", *(["—"] * len(columns)))
            continue
        cells = [
            fmt.format(row[key]) if row.get(key) is not None else "—" for _, key, fmt in columns
        ]
        t.add_row(name, f"{row['runs']:.0f}", *cells)
    loads = [x for r in results if r.load for x in r.load]
    if loads:
        notes.append(
            f"machine load (1-min average) during the runs: {min(loads):.1f}-{max(loads):.1f}"
        )
    if notes:
        t.caption = "\n".join([str(t.caption), *notes])
    return t


def print_table(scenario: Scenario, results: Sequence[RunResult]) -> None:
    Console().print(table(scenario, results))
