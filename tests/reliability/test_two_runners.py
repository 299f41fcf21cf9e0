"""One runner per job: a second runner on the same job and journal stops at once, and a
runner killed with SIGKILL never blocks the next one (runner/_lock.py)."""

from __future__ import annotations

import signal

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


def test_a_second_runner_on_the_same_job_exits_2_naming_the_journal_and_the_pid(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    node = cluster.add("node", behaviour={"chunk_delay": 0.05})
    overrides = [*cluster.overrides(), *FAST_ENGINE, "engine.slots=2"]
    first = job.start("first", *overrides)
    try:
        assert wait_for(
            lambda: len(read_jsonl(job.run_dir("first") / "results.jsonl")) >= 2, timeout=30
        )
        second = job.run("second", *overrides, timeout=30)
        assert second.returncode == 2, second.stderr[-2000:]
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert str(job.store) in lines[0] and f"pid {first.pid}" in lines[0], lines[0]
        assert not (job.run_dir("second") / "results.jsonl").exists()
        node.control(chunk_delay=0.0)
        _, err = first.communicate(timeout=60)
    finally:
        stop_process(first)
    assert first.returncode == 0, err[-2000:]
    tally = check_run(job, "first", sent=cluster.item_requests())
    assert (tally.ok, tally.duplicated) == (40, 0)
    # The second runner sent nothing: any item it had sent, the first sent as well.
    assert max(cluster.item_requests().values()) == 1
    ledger.add("kill", "a second runner on the same job", exit=2, **tally.row())


def test_a_runner_killed_with_sigkill_leaves_no_lock_behind(cluster: Cluster, job: Job) -> None:
    node = cluster.add("node", behaviour={"chunk_delay": 0.05})
    overrides = [*cluster.overrides(), *FAST_ENGINE, "engine.slots=2"]
    first = job.start("first", *overrides)
    try:
        assert wait_for(lambda: len(job.journaled_titles()) >= 2, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    finally:
        stop_process(first)
    assert job.store.with_name(job.store.name + ".lock").read_text() == f"{first.pid}\n"
    node.control(chunk_delay=0.0)
    again = job.run("again", *overrides, timeout=60)
    assert again.returncode == 0, again.stderr[-2000:]
    assert check_run(job, "again").ok == 40
