"""Re-running "the same command" when that command pins the run directory
(``hydra.run.dir=out/today``, as the README suggests): the second run must still leave one
record per item, and lines it did not write must never crash it.
"""

from __future__ import annotations

import json
from pathlib import Path

from runner._config import OutputConfig, OutputShape
from runner._output import consolidate
from tests.reliability._harness import FAST_ENGINE, Cluster, Job, Ledger, read_jsonl


def test_lines_the_runner_did_not_write_never_break_the_consolidated_output(
    tmp_path: Path,
) -> None:
    """Before the fix, an ``ok`` line without ``index``/``answer`` (an older runner's file, a
    hand edit) made the end of a run fail with exit 4 after every item was done."""
    path = tmp_path / "results.jsonl"
    lines = [
        {"id": "earlier", "status": "ok"},
        {"id": "odd", "status": "ok", "index": "3", "answer": "x"},
        {"id": "a", "index": 1, "status": "ok", "input": "not a dict", "answer": "b"},
        {"id": "b", "index": 0, "status": "ok", "input": {"title": "A"}, "answer": "a"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert consolidate(path, OutputConfig(shape=OutputShape.list)) == (["a", "b"], 2)
    mapping, _ = consolidate(path, OutputConfig(shape=OutputShape.mapping, key_field="title"))
    assert mapping == {"A": "a", "a": "b"}


def test_a_rerun_into_the_same_run_directory_leaves_one_record_per_item(
    cluster: Cluster, tmp_path: Path, ledger: Ledger
) -> None:
    job = Job.create(tmp_path / "job", 10)
    node = cluster.add("node", behaviour={"refuse": [job.titles[3]]})
    overrides = [*cluster.overrides(), *FAST_ENGINE, "engine.max_attempts=2"]
    assert job.run("today", *overrides).returncode == 1
    node.control(refuse=[])
    journaled, before = job.journaled_titles(), cluster.item_requests()
    proc = job.run("today", *overrides)  # the same command, the same pinned directory
    assert proc.returncode == 0, proc.stderr[-2000:]
    sent = cluster.item_requests() - before
    records = read_jsonl(job.run_dir("today") / "results.jsonl")
    per_item = [r["input"]["title"] for r in records]
    ledger.add(
        "fault",
        "re-run into the same pinned run directory",
        exit=proc.returncode,
        items=10,
        lost=len(set(job.titles) - set(per_item)),
        duplicated=len(per_item) - len(set(per_item)),
        resent=sum(n for title, n in sent.items() if title in journaled),
    )
    assert sorted(per_item) == job.titles
