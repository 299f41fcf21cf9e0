"""Ctrl-C (SIGINT) stops the runner promptly and cleanly, wherever it lands: in-flight
requests are cancelled, the journal is flushed, and the message says how to resume.

(Ctrl-C with local node processes is in ``test_real_nodes.py``: it needs the model.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.reliability._harness import (
    FAST_ENGINE,
    Cluster,
    FakeNode,
    Job,
    Ledger,
    check_run,
    read_jsonl,
    stop_process,
    wait_for,
)


def stop_mid_run(
    cluster: Cluster, job: Job, sig: signal.Signals
) -> tuple[FakeNode, subprocess.Popen[str], str, float, list[str]]:
    """Start a run whose answers take ~1.5 s (15 chunks, 0.1 s apart), send ``sig`` once a
    few items are done and a new wave is in flight; return the node, the process, its
    stderr, how long it took to stop, and the overrides (for a re-run)."""
    node = cluster.add("node", behaviour={"chunk_delay": 0.1})
    overrides = [*cluster.overrides(), *FAST_ENGINE, "engine.slots=4"]
    process = job.start("first", *overrides)
    results = job.run_dir("first") / "results.jsonl"
    try:
        assert wait_for(lambda: len(read_jsonl(results)) >= 4, timeout=30)
        assert wait_for(lambda: len(node.requests()) >= 8, timeout=10)  # a new wave in flight
        process.send_signal(sig)
        sent_at = time.monotonic()
        _, err = process.communicate(timeout=20)
        took = time.monotonic() - sent_at
    finally:
        stop_process(process)
    return node, process, err, took, overrides


def test_ctrl_c_mid_run_cancels_requests_flushes_the_journal_and_says_how_to_resume(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    node, process, err, took, overrides = stop_mid_run(cluster, job, signal.SIGINT)
    results = job.run_dir("first") / "results.jsonl"
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


def test_sigterm_mid_run_is_handled_like_ctrl_c_and_exits_143(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    """What Slurm, Kubernetes and systemd send: requests cancelled, journal flushed,
    report.json written, exit 143 (128 + SIGTERM)."""
    node, process, err, took, _ = stop_mid_run(cluster, job, signal.SIGTERM)
    assert process.returncode == 143, err[-2000:]
    assert took < 3, f"SIGTERM took {took:.1f}s"
    said = " ".join(err.split())
    assert "Terminated (SIGTERM)." in said and "Run the same command again to resume" in said
    assert "Traceback" not in err
    assert wait_for(lambda: len(node.aborted()) >= 1, timeout=5), "in-flight answers went on"
    report = json.loads((job.run_dir("first") / "report.json").read_text())
    assert report["stopped"] == "terminated (SIGTERM)"
    first = check_run(job, "first", sent=cluster.item_requests())
    assert first.duplicated == 0 and first.failed == 0 and 4 <= first.ok < 40
    assert report["totals"]["ok"] == first.ok
    ledger.add("fault", "SIGTERM mid-run", exit=143, **first.row())


def test_sigterm_while_the_input_is_checked_exits_143_with_one_line_and_sends_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    node = cluster.add("node")
    job = Job.create(tmp_path / "big", 150_000)
    process = job.start("run", *cluster.overrides(), *FAST_ENGINE)
    try:
        assert wait_for(lambda: (job.run_dir("run") / ".hydra").exists(), timeout=30)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        stop_process(process)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 143, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: terminated (SIGTERM)"), lines
    assert not node.requests()
