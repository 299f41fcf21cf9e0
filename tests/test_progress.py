"""What a run shows: the end-of-run summary of failed items, and tables that stay readable
at a thousand nodes."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from runner._progress import FailedIds, _flights, _nodes_table, summary_table
from runner._report import NodeLine, build_report
from runner._work import Snapshot


def test_the_failed_line_names_the_first_ten_ids_the_count_and_the_records_file() -> None:
    failures = FailedIds()
    for i in range(12):
        failures.add(f"id{i}")
    line = failures.summary(Path("/runs/r/results.jsonl"))
    assert line == (
        "12 items failed: id0, id1, id2, id3, id4, id5, id6, id7, id8, id9 and 2 more; their "
        'records (status "failed", with the error) are in /runs/r/results.jsonl'
    )


def test_one_failure_is_named_and_none_says_nothing() -> None:
    failures = FailedIds()
    assert failures.summary(Path("results.jsonl")) is None
    failures.add("abc")
    assert failures.summary(Path("results.jsonl")) == (
        '1 item failed: abc; their records (status "failed", with the error) are in results.jsonl'
    )


def _line(speed: float, errors: int = 0) -> NodeLine:
    return NodeLine(
        url="http://127.0.0.1:1", requests=10, successes=10 - errors, errors=errors, hedges=0,
        busy=0, slots=4, slots_from="config", limit=4, output_tokens=100, tokens_per_s=speed,
        latency_p50_s=1.0, latency_p95_s=2.0, health="admitted", last_error="",
    )  # fmt: skip


def _text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_a_thousand_nodes_end_in_a_table_of_the_fastest_slowest_and_failing_ones() -> None:
    nodes = {f"n{i}": _line(float(i), errors=1 if i == 500 else 0) for i in range(1000)}
    report = build_report(
        job="j", items=1, ok=1, failed=0, reused=0, requests_sent=1, wall_time_s=1.0,
        nodes=nodes,
    )  # fmt: skip
    text = _text(summary_table(report))
    shown = set(re.findall(r"\bn\d+\b", text))
    assert shown == {"n999", "n998", "n997", "n996", "n995", "n0", "n1", "n2", "n3", "n4", "n500"}
    assert "989 more nodes in report.json" in text


def test_a_few_nodes_end_in_a_table_with_every_node() -> None:
    nodes = {f"n{i}": _line(float(i)) for i in range(5)}
    report = build_report(
        job="j", items=1, ok=1, failed=0, reused=0, requests_sent=1, wall_time_s=1.0,
        nodes=nodes,
    )  # fmt: skip
    text = _text(summary_table(report))
    assert all(f"n{i} " in text for i in range(5))
    assert "more nodes" not in text


def test_the_live_view_of_a_thousand_nodes_is_a_few_lines() -> None:
    names = [f"n{i}" for i in range(1000)]
    snap = Snapshot(
        done=0, ok=0, failed=0, in_flight=dict.fromkeys(names, 4),
        errors={"n7": 9, "n8": 2}, benched=names[:7],
    )  # fmt: skip
    text = _text(_nodes_table(snap))
    assert len(text.splitlines()) <= 6
    assert "993 nodes" in text and "3972" in text  # serving, in flight
    assert "7 nodes: n0, n1, n2, n3, n4 and 2 more" in text
    assert "most errors: n8" in text  # n7 is benched: counted in the benched row
    assert _flights(snap) == "4000 over 1000 nodes"
