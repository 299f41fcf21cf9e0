"""Node faults with real processes: ``python -m runner`` against fake node processes on
loopback that are killed, frozen, restarted, or answer errors, garbage and broken streams.

Every case checks the same invariants (:func:`check_run`): each item ends exactly once in
``results.jsonl`` (ok, or failed with a reason), nothing already journaled is sent again, and
the consolidated output equals the journal.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from typing import Any

import pytest

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

# A request takes about 0.08 s (15 stream chunks, 5 ms apart): long enough to be caught
# mid-request, short enough that 40 items finish in a few seconds.
STEADY = {"chunk_delay": 0.005}


def item_requests(node: FakeNode) -> int:
    return sum(1 for r in node.requests() if not r["probe"])


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """Wait (bounded) for a CLI process; return its exit status and stderr."""
    try:
        _, err = process.communicate(timeout=timeout)
    finally:
        stop_process(process)
    return process.returncode, err


def record(ledger: Ledger, case: str, tally_row: dict[str, int | None], exit_code: int) -> None:
    ledger.add("fault", case, exit=exit_code, **tally_row)


def test_a_node_killed_mid_run_loses_nothing_and_its_work_moves(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    victim = cluster.add("victim", behaviour=STEADY)
    survivor = cluster.add("survivor", behaviour=STEADY)
    process = job.start("run", *cluster.overrides(), *FAST_ENGINE)
    assert wait_for(lambda: item_requests(victim) >= 4, timeout=30)
    victim.kill()
    code, err = finish(process)
    assert code == 0, err[-2000:]
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.lost, tally.duplicated) == (40, 0, 0)
    assert item_requests(survivor) > 0
    record(ledger, "node SIGKILLed mid-run (1 of 2)", tally.row(), code)


def test_a_frozen_node_is_abandoned_after_the_stall_timeout(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    frozen = cluster.add("frozen", behaviour={"chunk_delay": 0.05})
    cluster.add("healthy", behaviour=STEADY)
    process = job.start("run", *cluster.overrides(), *FAST_ENGINE)
    # Freeze it while it streams its first answer: the runner sees no byte for
    # stall_timeout. (Not later: a node ten times slower than the other is left few items
    # of a 40-item run by the tail rule once its pace is known.)
    assert wait_for(lambda: item_requests(frozen) >= 1, timeout=30)
    frozen.signal(signal.SIGSTOP)
    started = time.monotonic()
    try:
        code, err = finish(process)
    finally:
        frozen.signal(signal.SIGCONT)
    assert code == 0, err[-2000:]
    assert time.monotonic() - started < 30
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.lost, tally.duplicated) == (40, 0, 0)
    records = [r for r in _results(job) if any("stalled" in e for e in r["errors"])]
    assert records, "no item records the stall it survived"
    record(ledger, "node SIGSTOPped mid-request (1 of 2)", tally.row(), code)


def test_a_restarted_node_is_readmitted_and_used_again(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    bouncing = cluster.add("bouncing", behaviour={"chunk_delay": 0.003})
    cluster.add("slow", behaviour={"chunk_delay": 0.02})
    process = job.start("run", *cluster.overrides(), *FAST_ENGINE)
    assert wait_for(lambda: item_requests(bouncing) >= 3, timeout=30)
    bouncing.kill()
    time.sleep(0.4)
    bouncing.start()  # same port, new process
    code, err = finish(process)
    assert code == 0, err[-2000:]
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.lost, tally.duplicated) == (40, 0, 0)
    second_life = [
        r for r in bouncing.requests() if r["pid"] == bouncing.incarnations[-1] and not r["probe"]
    ]
    assert second_life, "the restarted node was never given work again"
    record(ledger, "node restarted mid-run, re-admitted", tally.row(), code)


@pytest.mark.parametrize(
    ("fault", "count"),
    [("500", 8), ("429", 8), ("malformed", 6), ("wrongjson", 6), ("truncated", 6), ("stall", 4)],
)
def test_a_lone_node_that_misbehaves_in_bursts_still_answers_every_item(
    cluster: Cluster, job: Job, ledger: Ledger, fault: str, count: int
) -> None:
    """One node only: its bursts cannot be routed around, only retried through."""
    node = cluster.add("flaky", behaviour={"faults": [fault] * count})
    proc = job.run("run", *cluster.overrides(), *FAST_ENGINE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not node.requests()[0]["probe"] and node.requests()[0]["fault"] == fault
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.lost, tally.duplicated) == (40, 0, 0)
    survived = [r for r in _results(job) if r["errors"]]
    assert survived, "no record mentions the faults it survived"
    record(ledger, f"lone node: burst of {count} × {fault}", tally.row(), proc.returncode)


def test_a_lone_busy_node_is_waited_for_without_failures(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    """503 + Retry-After is "come back": no item attempt is spent, the node is not benched
    (one failure would bench it here, one failure would fail an item)."""
    node = cluster.add("full", behaviour={"faults": ["busy"] * 8, "retry_after": "0"})
    strict = ("engine.max_attempts=1", "engine.breaker_failures=1")
    proc = job.run("run", *cluster.overrides(), *FAST_ENGINE, *strict)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["fault"] for r in node.requests()[:8]] == ["busy"] * 8
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.lost, tally.duplicated) == (40, 0, 0)
    (line,) = json.loads((job.run_dir("run") / "report.json").read_text())["nodes"].values()
    assert (line["busy"], line["errors"], line["health"]) == (8, 0, "admitted")
    record(ledger, "lone node: burst of 8 × 503 busy (Retry-After)", tally.row(), proc.returncode)


def test_nodes_without_configured_slots_get_the_slots_they_report(
    cluster: Cluster, job: Job
) -> None:
    cluster.add("says", behaviour={"slots": 3, **STEADY})
    cluster.add("silent", behaviour=STEADY)
    proc = job.run("run", *cluster.overrides(), *FAST_ENGINE, "engine.slots=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    nodes = json.loads((job.run_dir("run") / "report.json").read_text())["nodes"]
    assert sorted((n["slots"], n["slots_from"]) for n in nodes.values()) == [
        (2, "default"),
        (3, "node"),
    ]
    said = (job.run_dir("run") / "runner.log").read_text()
    assert "(3 slots, node)" in said and "(2 slots, default)" in said


def test_without_streaming_bad_bodies_and_cut_answers_are_retried_too(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    """``engine.stream=false``: whole answers, parsed at once."""
    mix = ["500", "malformed", "truncated", "wrongjson", "429", "truncated"]
    cluster.add("flaky", behaviour={"faults": mix})
    cluster.add("steady", behaviour={"faults": list(reversed(mix))})
    proc = job.run("run", *cluster.overrides(), *FAST_ENGINE, "engine.stream=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.lost, tally.duplicated) == (40, 0, 0)
    assert any(r["errors"] for r in _results(job))
    record(ledger, "no streaming: 500/429/malformed/cut/wrong JSON on 2 of 2", tally.row(), 0)


def test_mixed_faults_on_two_of_three_nodes_are_routed_around(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    mix = ["500", "malformed", "429", "truncated", "stall", "503", "wrongjson", "500", "truncated"]
    cluster.add("a", behaviour={"faults": mix, **STEADY})
    cluster.add("b", behaviour={"faults": list(reversed(mix)), **STEADY})
    cluster.add("c", behaviour=STEADY)
    proc = job.run("run", *cluster.overrides(), *FAST_ENGINE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.lost, tally.duplicated) == (40, 0, 0)
    record(ledger, "mixed faults on 2 of 3 nodes", tally.row(), proc.returncode)


def test_all_nodes_down_for_a_while_the_run_waits_and_completes(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    nodes = [cluster.add("a", behaviour=STEADY), cluster.add("b", behaviour=STEADY)]
    process = job.start("run", *cluster.overrides(), *FAST_ENGINE)
    assert wait_for(lambda: sum(item_requests(n) for n in nodes) >= 6, timeout=30)
    for node in nodes:
        node.kill()
    time.sleep(2.0)
    for node in nodes:
        node.start()
    code, err = finish(process)
    assert code == 0, err[-2000:]
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.lost, tally.duplicated) == (40, 0, 0)
    record(ledger, "all nodes down 2 s, then back", tally.row(), code)


def test_all_nodes_down_for_good_stop_the_run_and_a_rerun_completes(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    nodes = [cluster.add("a", behaviour=STEADY), cluster.add("b", behaviour=STEADY)]
    overrides = [*cluster.overrides(), *FAST_ENGINE, "engine.no_node_timeout=2"]
    process = job.start("first", *overrides)
    assert wait_for(lambda: sum(item_requests(n) for n in nodes) >= 8, timeout=30)
    for node in nodes:
        node.kill()
    started = time.monotonic()
    code, err = finish(process)
    assert code == 3, err[-2000:]
    assert time.monotonic() - started < 15, "the bounded wait was not bounded"
    said = " ".join(err.split())  # rich wraps long lines at the terminal width
    assert "no node could serve for 2s" in said and "run the same command again" in said
    first = check_run(job, "first", sent=cluster.item_requests())
    assert first.ok > 0 and first.lost == 40 - first.ok - first.failed
    assert first.duplicated == 0
    journaled = job.journaled_titles()
    assert len(journaled) == first.ok

    before = cluster.item_requests()
    for node in nodes:
        node.start()
    proc = job.run("again", *overrides)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sent = cluster.item_requests() - before
    again = check_run(job, "again", journaled_before=journaled, sent=sent)
    assert (again.ok, again.lost, again.duplicated, again.resent) == (40, 0, 0, 0)
    assert sum(sent.values()) >= 40 - len(journaled)
    record(ledger, "all nodes down for good: exit 3, then re-run", again.row(), code)


def test_one_bad_row_fails_alone_with_its_reason(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    bad = job.titles[7]
    for name in ("a", "b"):
        cluster.add(name, behaviour={"refuse": [bad]})
    proc = job.run("run", *cluster.overrides(), *FAST_ENGINE, "engine.max_attempts=3")
    assert proc.returncode == 1, proc.stderr[-2000:]
    tally = check_run(job, "run", sent=cluster.item_requests())
    assert (tally.ok, tally.failed, tally.lost, tally.duplicated) == (39, 1, 0, 0)
    failed = next(r for r in _results(job) if r["status"] == "failed")
    assert failed["input"] == {"title": bad} and "refused" in failed["error"]
    assert Counter(cluster.item_requests())[bad] == failed["attempts"] == 3
    record(ledger, "one row refused by every node", tally.row(), proc.returncode)


def _results(job: Job, run: str = "run") -> list[dict[str, Any]]:
    return read_jsonl(job.run_dir(run) / "results.jsonl")
