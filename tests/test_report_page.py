"""report.html: one self-contained page per run, drawn from the run's own files, that loads
in a real browser with no console message (runner/_report_page.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import _records, _report_page
from runner._estimate import Estimate, TokenTally, estimate
from runner._report import NodeLine, build_report
from runner._report_page import trace_line, write_report_page
from runner._request import Api, Completion, GenerationRequest, Style
from runner._work import RequestTrace, Work
from tests._browser import distinct_colours, load


def _node_line(requests: int) -> NodeLine:
    return NodeLine(
        url="http://127.0.0.1:1",
        requests=requests,
        successes=requests,
        errors=0,
        hedges=0,
        busy=0,
        slots=2,
        slots_from="config",
        limit=2,
        output_tokens=10 * requests,
        tokens_per_s=5.0,
        latency_p50_s=1.0,
        latency_p95_s=2.0,
        health="admitted",
        last_error="",
    )


def _work(i: int) -> Work:
    request = GenerationRequest(Api.textsynth, Style.chat, "m", prompt=f"p{i}")
    return Work(id=f"item-{i}", index=i, input={"t": i}, request=request, key=request.key())


def write_run(
    run_dir: Path, *, items: int, nodes: tuple[str, ...], estimate: Estimate | None = None
) -> None:
    """A run directory as a run leaves it: requests.jsonl, results.jsonl (two items failed,
    one request timed out, one rejected)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (
        (run_dir / "requests.jsonl").open("w") as req,
        (run_dir / "results.jsonl").open("w") as res,
    ):
        for i in range(items):
            node = nodes[i % len(nodes)]
            outcome = "timeout" if i == 3 else "rejected" if i == 4 else "ok"
            trace = RequestTrace(
                node, f"item-{i}", 100.0 + i * 0.5, 101.0 + i * 0.5, outcome, True, 7
            )
            req.write(json.dumps(trace_line(trace)) + "\n")
            work = _work(i)
            if i in (3, 4):
                record = _records.failed(
                    work, error=f"cause {i}", attempts=1, seeds=[1], errors=[], text=None
                )
            else:
                record = _records.ok(
                    work,
                    answer="a",
                    step=None,
                    completion=Completion("a", output_tokens=7),
                    node=node,
                    seed=1,
                    latency=1.0,
                    attempts=1,
                    seeds=[1],
                    errors=[],
                    text="a",
                )
            res.write(json.dumps(record) + "\n")
    report = build_report(
        job="demo",
        items=items,
        ok=items - 2,
        failed=2,
        reused=0,
        requests_sent=items,
        wall_time_s=float(items),
        nodes={name: _node_line(items // len(nodes)) for name in nodes},
        estimate=estimate,
    )
    write_report_page(run_dir, report)


def test_the_page_shows_every_request_of_every_node_and_every_cause(tmp_path: Path) -> None:
    write_run(tmp_path, items=40, nodes=("alpha", "beta"))
    page = (tmp_path / "report.html").read_text()
    assert page.count("<rect") >= 40 + 60  # 40 request bars, 60 throughput bins
    assert page.count(": ok, ") == 38 and ": timeout, " in page and ": rejected, " in page
    assert "alpha" in page and "beta" in page
    assert "cause 3" in page and "cause 4" in page
    assert "http://" not in page.replace("http://127.0.0.1:1", "")  # nothing fetched


def test_node_names_and_errors_are_escaped(tmp_path: Path) -> None:
    write_run(tmp_path, items=6, nodes=("<script>alert(1)</script>",))
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_a_large_run_draws_every_kth_request_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_report_page, "MAX_BARS", 10)
    write_run(tmp_path, items=40, nodes=("alpha",))
    page = (tmp_path / "report.html").read_text()
    assert page.count("<title>item-") == 10
    assert "every 4th drawn" in page


def test_the_page_sets_the_estimate_beside_what_the_run_did(tmp_path: Path) -> None:
    tally = TokenTally(context=2048)
    for i in range(40):
        tally.add(max_tokens=50, answers=1)
        tally.count(f"item-{i}", 30, room=50)
    found = estimate(tally, speeds={"alpha": 10.0}, prices={"alpha": 3.6})
    write_run(tmp_path, items=40, nodes=("alpha",), estimate=found)
    page = (tmp_path / "report.html").read_text()
    assert "Estimate and actual" in page
    assert "<td>output tokens</td><td>at most 2,000</td><td>400</td>" in page
    assert "<td>time</td><td>at most 200 s</td><td>40 s</td>" in page
    assert "<td>prompt tokens</td><td>1,200</td>" in page
    assert "<td>cost</td><td>at most 0.2</td>" in page  # 200 s at 3.6/hour


def test_a_page_without_an_estimate_has_no_such_table(tmp_path: Path) -> None:
    write_run(tmp_path, items=6, nodes=("alpha",))
    assert "Estimate and actual" not in (tmp_path / "report.html").read_text()


def test_a_run_that_sent_nothing_still_gets_a_page(tmp_path: Path) -> None:
    report = build_report(
        job="demo", items=3, ok=3, failed=0, reused=3, requests_sent=0, wall_time_s=0.1, nodes={}
    )
    write_report_page(tmp_path, report)
    assert "No request was sent" in (tmp_path / "report.html").read_text()


def test_the_page_loads_in_a_browser_with_no_console_message(tmp_path: Path) -> None:
    write_run(tmp_path, items=40, nodes=("alpha", "beta", "gamma"))
    shot = tmp_path / "shot.png"
    assert load(tmp_path / "report.html", shot) == []
    assert distinct_colours(shot) > 8  # tables and coloured bars, not a blank page


def test_the_browser_check_sees_a_script_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body>x<script>undefinedFunction();</script></body></html>")
    messages = load(broken, tmp_path / "shot.png", size="400,300")
    assert any("undefinedFunction" in m for m in messages), messages
