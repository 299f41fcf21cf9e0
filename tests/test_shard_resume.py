"""A shard killed mid-run (SIGKILL: no clean-up) resumes when run again: it re-sends only what
its own journal lacks, and the merge of the shards is then complete. Real processes: a fake
node (tests/reliability/fakenode.py) and the runner, on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability._harness import (
    FAST_ENGINE,
    REPO,
    Cluster,
    Job,
    read_jsonl,
    stop_process,
    wait_for,
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "nodes")
    nodes.folder.mkdir()
    try:
        yield nodes
    finally:
        nodes.close()


def test_a_killed_shard_run_again_resends_only_what_its_journal_lacks(
    tmp_path: Path, cluster: Cluster
) -> None:
    node = cluster.add("n0", behaviour={"delay": 0.05})
    job = Job.create(tmp_path / "job", 60)
    shared = [
        *FAST_ENGINE,
        "cluster=static",
        f"cluster.nodes=[{{address: '{node.address}', slots: 2}}]",
        "shard_nodes=share",  # one node, its two slots shared: one each
    ]
    journal = job.journal_dir / "movie_details.shard-0-of-2.jsonl"

    def journaled() -> set[str]:
        return {r["input"]["title"] for r in read_jsonl(journal) if r.get("status") == "ok"}

    first = job.start("s0", "shard=0/2", *shared)
    try:
        assert wait_for(lambda: len(journaled()) >= 5, timeout=60), first.stderr
        first.kill()  # SIGKILL: no report.json, no clean-up
        first.communicate(timeout=10)
    finally:
        stop_process(first)
    before = journaled()
    sent_before = len(cluster.requests())
    assert not (job.run_dir("s0") / "report.json").exists()

    again = job.run("s0-again", "shard=0/2", *shared)
    assert again.returncode == 0, again.stderr
    resent = {r["title"] for r in cluster.requests()[sent_before:] if not r["probe"]}
    assert not resent & before  # nothing journaled before the kill was sent again
    report = json.loads((job.run_dir("s0-again") / "report.json").read_text())
    items = report["shard"]["items"]
    assert report["totals"]["reused"] == len(before)
    assert report["totals"]["ok"] == items and len(resent) == items - len(before)

    other = job.run("s1", "shard=1/2", *shared)
    assert other.returncode == 0, other.stderr
    merge = [sys.executable, "-m", "runner.merge", "--out", str(tmp_path / "merged")]
    with_dead = subprocess.run(
        [*merge, str(job.run_dir("s0")), str(job.run_dir("s1"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert with_dead.returncode == 2 and "no report.json" in with_dead.stderr
    done = subprocess.run(
        [*merge, str(job.run_dir("s0-again")), str(job.run_dir("s1"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads((tmp_path / "merged" / "movie_details.json").read_text())
    assert [answer["title"] for answer in listed] == job.titles
