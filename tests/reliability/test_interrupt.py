"""Ctrl-C (SIGINT) stops the runner promptly and cleanly, wherever it lands: in-flight
requests are cancelled, the journal is flushed, and the message says how to resume.

(Ctrl-C with local node processes is in ``test_real_nodes.py``: it needs the model.)
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.reliability._harness import (
    FAST_ENGINE,
    Cluster,
    Job,
    Ledger,
    check_run,
    read_jsonl,
    stop_process,
    wait_for,
)


def test_ctrl_c_mid_run_cancels_requests_flushes_the_journal_and_says_how_to_resume(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    # Answers take ~1.5 s (15 chunks, 0.1 s apart): Ctrl-C always finds requests in flight.
    node = cluster.add("node", behaviour={"chunk_delay": 0.1})
    overrides = [*cluster.overrides(), *FAST_ENGINE, "engine.slots=4"]
    process = job.start("first", *overrides)
    results = job.run_dir("first") / "results.jsonl"
    try:
        assert wait_for(lambda: len(read_jsonl(results)) >= 4, timeout=30)
        assert wait_for(lambda: len(node.requests()) >= 8, timeout=10)  # a new wave in flight
        process.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        _, err = process.communicate(timeout=20)
        took = time.monotonic() - interrupted_at
    finally:
        stop_process(process)
    assert process.returncode == 130, err[-2000:]
    assert took < 3, f"Ctrl-C took {took:.1f}s"
    said = " ".join(err.split())
    assert "Interrupted." in said and "Run the same command again to resume" in said
    assert "Traceback" not in err
    assert wait_for(lambda: len(node.aborted()) >= 1, timeout=5), "in-flight answers went on"
    first = check_run(job, "first", sent=cluster.item_requests())
    assert first.duplicated == 0 and first.failed == 0 and 4 <= first.ok < 40
    assert job.journaled_titles() == {
        r["input"]["title"] for r in read_jsonl(results) if r["status"] == "ok"
    }

    journaled = job.journaled_titles()
    before = cluster.item_requests()
    node.control(chunk_delay=0.0)
    proc = job.run("again", *overrides)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = check_run(
        job, "again", journaled_before=journaled, sent=cluster.item_requests() - before
    )
    assert (again.ok, again.lost, again.duplicated, again.resent) == (40, 0, 0, 0)
    ledger.add("fault", "Ctrl-C mid-run, then re-run", exit=130, **again.row())


def test_ctrl_c_while_the_input_is_checked_exits_130_with_one_line_and_sends_nothing(
    cluster: Cluster, tmp_path: Path, ledger: Ledger
) -> None:
    node = cluster.add("node")
    job = Job.create(tmp_path / "big", 150_000)  # checking every prompt takes a few seconds
    process = job.start("run", *cluster.overrides(), *FAST_ENGINE)
    try:  # Hydra writes .hydra/ once the configuration is composed, just before the run starts
        assert wait_for(lambda: (job.run_dir("run") / ".hydra").exists(), timeout=30)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        stop_process(process)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), lines
    assert "run the same command again" in lines[0]
    assert not node.requests()
    assert not (job.run_dir("run") / "results.jsonl").exists()
    ledger.add(
        "fault",
        "Ctrl-C while the input is checked (nothing sent yet)",
        exit=130,
        items=150_000,
        ok=0,
        failed=0,
        lost=0,
        duplicated=0,
        resent=0,
    )
