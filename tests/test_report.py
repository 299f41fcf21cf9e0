"""report.json is the typed report's serialisation, with the keys and order it always had."""

from __future__ import annotations

from runner._nodes import NodeSpec, NodeState
from runner._report import build_report


def test_report_json_keeps_its_keys_in_order_and_counts_the_unfinished() -> None:
    local, remote = (
        NodeState(NodeSpec("a", "http://127.0.0.1:1", slots=2)),
        NodeState(NodeSpec("b", "http://127.0.0.1:2", slots=1)),
    )
    local.record_success(0.5, 30)
    remote.record_success(0.25, 10)
    report = build_report(
        job="j",
        items=10,
        ok=6,
        failed=1,
        reused=2,
        requests_sent=9,
        wall_time_s=2.0,
        nodes={"a": local.stats(restarts=1), "b": remote.stats()},
    )
    data = report.to_json()
    assert list(data) == ["job", "totals", "wall_time_s", "tokens_per_s", "stopped", "nodes"]
    assert data["totals"] == {
        "items": 10, "ok": 6, "failed": 1, "reused": 2, "unfinished": 3,
        "requests_sent": 9, "output_tokens": 40,
    }  # fmt: skip
    assert data["tokens_per_s"] == 20.0 and data["stopped"] is None
    assert list(data["nodes"]["b"]) == [
        "url", "requests", "successes", "errors", "hedges", "busy", "slots", "slots_from",
        "limit", "output_tokens", "tokens_per_s", "latency_p50_s", "latency_p95_s", "health",
        "last_error",
    ]  # fmt: skip
    assert data["nodes"]["a"]["restarts"] == 1 and "restarts" not in data["nodes"]["b"]
