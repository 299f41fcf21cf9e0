"""``report.json``: what a run did, in total and per node (the job's output file is
:mod:`runner._output`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._files import replace_file


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically: a reader sees the old file or the new one."""
    with replace_file(path) as out:
        json.dump(value, out, ensure_ascii=False, indent=2)
        out.write("\n")


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
