"""Turn the ledger of a reliability run into the Markdown tables of docs/reliability.md.

RELIABILITY_REPORT=ledger.json python -m pytest tests/reliability -q
python -m tests.reliability.report ledger.json
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from typing import Any


def _cell(value: Any) -> str:
    text = "—" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    lines = [
        "| " + " | ".join(title for title, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key, "")) for _, key in columns) + " |")
    return "\n".join(lines)


def short(message: str, limit: int = 150) -> str:
    message = re.sub(r"/tmp/pytest-of-[^ ]*?/(?=[^/ ]+( |$|:|'))", "…/", message)
    return message if len(message) <= limit else message[: limit - 1] + "…"


def render(rows: list[dict[str, Any]]) -> str:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    everything = by_kind.get("fault", [])
    faults = [r for r in everything if not r.get("known_bug")]
    bugs = [r for r in everything if r.get("known_bug")]
    kills = by_kind.get("kill", [])
    bad = by_kind.get("bad input", [])
    security = by_kind.get("security", [])
    trials = [k for k in kills if "trial" in k["case"] or "SIGKILLed" in k["case"]]
    out = [
        "## Counts",
        "",
        f"- faults survived: {len(faults)} "
        f"(lost {sum(r.get('lost', 0) for r in faults)}, "
        f"duplicated {sum(r.get('duplicated', 0) for r in faults)}, "
        f"re-sent {sum(r.get('resent') or 0 for r in faults)})"
        + (f"; {len(bugs)} more with an open bug (xfail, below)" if bugs else ""),
        f"- runner kills: {len(trials)} trials "
        f"(lost {sum(r.get('lost', 0) for r in kills)}, "
        f"duplicated {sum(r.get('duplicated', 0) for r in kills)}, "
        f"re-sent {sum(r.get('resent') or 0 for r in kills)})",
        f"- bad inputs tried: {len(bad)} (requests sent: {sum(r.get('sent', 0) for r in bad)})",
        f"- security checks: {len(security)} (leaks: {sum(r.get('leaks', 0) for r in security)})",
        "",
        "## Faults",
        "",
        table(
            faults + bugs,
            [
                ("case", "case"),
                ("exit", "exit"),
                ("items", "items"),
                ("ok", "ok"),
                ("failed", "failed"),
                ("lost", "lost"),
                ("duplicated", "duplicated"),
                ("re-sent", "resent"),
            ],
        ),
        "",
        "## Runner kills",
        "",
        table(
            kills,
            [
                ("trial", "case"),
                ("killed at", "kill_at"),
                ("mid-run", "mid_run"),
                ("torn line", "torn"),
                ("journaled before", "journaled_before"),
                ("journaled after", "journaled_after"),
                ("items", "items"),
                ("lost", "lost"),
                ("duplicated", "duplicated"),
                ("re-sent", "resent"),
            ],
        ),
        "",
        "## Bad inputs",
        "",
        table(
            ({**r, "message": short(str(r.get("message", "")))} for r in bad),
            [("case", "case"), ("exit", "exit"), ("sent", "sent"), ("the one line", "message")],
        ),
        "",
        "## Security",
        "",
        table(security, [("case", "case"), ("leaks", "leaks")]),
        "",
    ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.reliability.report LEDGER.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        print(render(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
