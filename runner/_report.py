"""What a run leaves behind besides the journal: ``report.json`` and the job's output file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ._config import OutputConfig, OutputShape
from ._journal import read_records


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, ensure_ascii=False, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def consolidate(results: Path, output: OutputConfig) -> tuple[Any, int]:
    """The job's consolidated output built from a run's ``results.jsonl``, in input order.

    Returns the value and how many accepted answers it holds. ``list``: every accepted
    answer; ``mapping``: the item's ``key_field`` (or its id) → answer. Lines without an
    ``index`` and an ``answer`` (not written by this runner) are skipped, never fatal.
    """
    answers: dict[int, tuple[str, Any]] = {}
    for _, record in read_records(results):
        index = record.get("index")
        if record.get("status") != "ok" or "answer" not in record or type(index) is not int:
            continue  # a failure, or a line this runner did not write: not an answer
        item = record.get("input")
        if not isinstance(item, dict):
            item = {}
        key = item.get(output.key_field) if output.key_field else None
        answers[index] = (
            str(key if key is not None else record.get("id")),
            record["answer"],
        )
    ordered = [answers[i] for i in sorted(answers)]
    if output.shape is OutputShape.mapping:
        return {key: answer for key, answer in ordered}, len(ordered)
    return [answer for _, answer in ordered], len(ordered)


def write_output(run_dir: Path, results: Path, output: OutputConfig) -> Path | None:
    """Write the job's consolidated output file into the run directory, if it has one."""
    if output.shape is OutputShape.none or not output.filename:
        return None
    value, _ = consolidate(results, output)
    path = run_dir / output.filename
    write_json(path, value)
    return path


def build_report(
    *,
    job: str,
    items: int,
    ok: int,
    failed: int,
    reused: int,
    requests_sent: int,
    wall_time_s: float,
    nodes: dict[str, dict[str, object]],
    stopped: str | None = None,
) -> dict[str, Any]:
    """The content of ``report.json``."""
    output_tokens = sum(int(str(n.get("output_tokens", 0))) for n in nodes.values())
    return {
        "job": job,
        "totals": {
            "items": items,
            "ok": ok,
            "failed": failed,
            "reused": reused,
            "unfinished": items - ok - failed,
            "requests_sent": requests_sent,
            "output_tokens": output_tokens,
        },
        "wall_time_s": round(wall_time_s, 3),
        "tokens_per_s": round(output_tokens / wall_time_s, 2) if wall_time_s > 0 else 0,
        "stopped": stopped,
        "nodes": nodes,
    }
