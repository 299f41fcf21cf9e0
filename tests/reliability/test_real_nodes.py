"""Faults with the real thing: ``python -m runner`` on its embedded local cluster (two
``python -m runner.node`` processes with SmolLM2) whose nodes are killed or frozen, a runner
that is interrupted or killed, and a local cluster that requires an API key.

Real answers differ from run to run: these tests check structure and the invariants (each
item exactly once, output equal to the journal), never text.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests._realnode import model_ready
from tests.reliability._harness import Job, Ledger, check_run, read_jsonl, stop_process, wait_for

pytestmark = pytest.mark.model

ITEMS = 10

LOCAL = (
    "cluster=local",
    "cluster.local.nodes=2",
    "cluster.local.threads=1",
    "job.max_tokens=16",
    "engine.stall_timeout=3",
    "engine.request_timeout=30",
    "engine.probe_interval=0.5",
    "engine.probe_timeout=5",
    "engine.backoff_initial=0.1",
    "engine.backoff_max=1",
    "engine.no_node_timeout=30",
)


@pytest.fixture(autouse=True)
def _needs_the_model() -> None:
    reason = model_ready()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def synopsis(tmp_path: Path) -> Job:
    return Job.create(tmp_path / "job", ITEMS, name="movie_synopsis")


def node_processes(runner: subprocess.Popen[str]) -> list[psutil.Process]:
    """The local node processes the runner started."""
    try:
        children = psutil.Process(runner.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "runner.node" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def results_count(job: Job, run: str) -> int:
    return len(read_jsonl(job.run_dir(run) / "results.jsonl"))


def gone(processes: list[psutil.Process], timeout: float = 10) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """CLI processes of a test; killed at teardown if still running."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        stop_process(process)


def test_a_local_node_killed_mid_run_loses_nothing(
    synopsis: Job, ledger: Ledger, started: list[subprocess.Popen[str]]
) -> None:
    process = synopsis.start("run", *LOCAL)
    started.append(process)
    assert wait_for(lambda: results_count(synopsis, "run") >= 2, timeout=120)
    nodes = node_processes(process)
    assert len(nodes) == 2
    nodes[0].kill()
    _, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-2000:]
    tally = check_run(synopsis, "run")
    assert (tally.ok, tally.lost, tally.duplicated) == (ITEMS, 0, 0)
    assert gone(nodes[1:]), "the surviving local node was left running"
    ledger.add("fault", "real model: local node SIGKILLed mid-run", exit=0, **tally.row())


def test_a_local_node_frozen_mid_request_is_abandoned_and_stopped_at_the_end(
    synopsis: Job, ledger: Ledger, started: list[subprocess.Popen[str]]
) -> None:
    process = synopsis.start("run", *LOCAL)
    started.append(process)
    assert wait_for(lambda: results_count(synopsis, "run") >= 2, timeout=120)
    nodes = node_processes(process)
    nodes[0].suspend()  # SIGSTOP, while it is most likely generating
    try:
        assert wait_for(lambda: results_count(synopsis, "run") >= ITEMS, timeout=120)
    finally:
        nodes[0].resume()  # lets it take the runner's SIGTERM instead of waiting for SIGKILL
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-2000:]
    tally = check_run(synopsis, "run")
    assert (tally.ok, tally.lost, tally.duplicated) == (ITEMS, 0, 0)
    assert gone(nodes)
    ledger.add("fault", "real model: local node SIGSTOPped mid-request", exit=0, **tally.row())


def test_ctrl_c_stops_the_local_nodes_promptly_and_a_rerun_resumes(
    synopsis: Job, ledger: Ledger, started: list[subprocess.Popen[str]]
) -> None:
    process = synopsis.start("first", *LOCAL)
    started.append(process)
    assert wait_for(lambda: results_count(synopsis, "first") >= 2, timeout=120)
    nodes = node_processes(process)
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, err = process.communicate(timeout=30)
    took = time.monotonic() - interrupted
    assert process.returncode == 130, err[-2000:]
    assert took < 10, f"Ctrl-C took {took:.1f}s"
    assert "Run the same command again to resume" in " ".join(err.split())
    assert gone(nodes, timeout=1), "local nodes outlived the runner"
    first = check_run(synopsis, "first")
    assert first.duplicated == 0 and first.ok >= 2
    journaled = synopsis.journaled_titles()

    proc = synopsis.run("again", *LOCAL, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = check_run(synopsis, "again")
    assert (again.ok, again.lost, again.duplicated) == (ITEMS, 0, 0)
    reused = {
        r["input"]["title"]
        for r in read_jsonl(synopsis.run_dir("again") / "results.jsonl")
        if r.get("reused")
    }
    assert reused == journaled, "journaled items were not reused (so they were sent again)"
    again.resent = len(journaled - reused)
    ledger.add("fault", "real model: Ctrl-C with local nodes, then re-run", exit=130, **again.row())


def test_ctrl_c_while_local_nodes_start_leaves_none_behind(
    synopsis: Job, started: list[subprocess.Popen[str]]
) -> None:
    process = synopsis.start("run", *LOCAL)
    started.append(process)
    assert wait_for(lambda: len(node_processes(process)) == 2, timeout=60, interval=0.005)
    nodes = node_processes(process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert gone(nodes, timeout=1), "local nodes outlived the runner"


def test_a_killed_runner_takes_its_local_nodes_with_it_and_a_rerun_resumes(
    synopsis: Job, ledger: Ledger, started: list[subprocess.Popen[str]]
) -> None:
    process = synopsis.start("first", *LOCAL)
    started.append(process)
    assert wait_for(lambda: results_count(synopsis, "first") >= 2, timeout=120)
    nodes = node_processes(process)
    process.kill()
    process.communicate(timeout=10)
    assert gone(nodes, timeout=5), "local nodes were orphaned by a killed runner"
    journaled = synopsis.journaled_titles()
    assert len(journaled) >= 2
    proc = synopsis.run("again", *LOCAL, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = check_run(synopsis, "again")
    assert (again.ok, again.lost, again.duplicated) == (ITEMS, 0, 0)
    records = read_jsonl(synopsis.run_dir("again") / "results.jsonl")
    reused = {r["input"]["title"] for r in records if r.get("reused")}
    assert reused == journaled, "journaled items were not reused (so they were sent again)"
    again.resent = len(journaled - reused)
    ledger.add("kill", "real model: runner SIGKILLed with local nodes, re-run", **again.row())


def test_a_keyed_local_cluster_enforces_the_key_listens_on_loopback_and_leaks_nothing(
    tmp_path: Path, ledger: Ledger, started: list[subprocess.Popen[str]]
) -> None:
    job = Job.create(tmp_path / "job", 6, name="movie_synopsis")
    key = f"sk-local-{secrets.token_hex(12)}"
    env = {"RELIABILITY_LOCAL_KEY": key}
    process = job.start(
        "run", *LOCAL, "cluster.api_key_env=RELIABILITY_LOCAL_KEY", "progress=log", env=env
    )
    started.append(process)
    assert wait_for(lambda: results_count(job, "run") >= 1, timeout=120)
    listening = set()
    for node in node_processes(process):
        for conn in node.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                listening.add(conn.laddr)
    assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}, listening
    port = next(iter(listening)).port
    url = f"http://127.0.0.1:{port}/v1/engines/smollm2/completions"
    body = {"prompt": "Hi", "max_tokens": 1}
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    wrong = {"Authorization": f"Bearer {key}x"}
    assert httpx.post(url, json=body, headers=wrong, timeout=30).status_code == 401
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-2000:]
    artifacts = [p for p in job.folder.rglob("*") if p.is_file()]
    assert any(p.name.startswith("local-") for p in artifacts)  # the nodes' logs are there
    leaked = [str(p) for p in artifacts if key.encode() in p.read_bytes()]
    assert not leaked and key not in out + err
    for node_cmd in (p.read_text() for p in artifacts if p.suffix == ".log"):
        assert key not in node_cmd
    assert os.environ.get("RELIABILITY_LOCAL_KEY") is None  # the key went to the child only
    ledger.add("security", "real model: keyed local cluster (401 without key, loopback)", leaks=0)
