"""The failure policy with real processes: ``python -m runner`` against fake nodes on
loopback that refuse some or all requests, or cannot be reached at all.

A bad request (a 4xx other than 408/429) fails its item after one request and benches
nobody; a run whose first requests are all refused, or that asks for more tokens than the
nodes' context, stops with exit 2 and one line; a run where no node answers stops with
exit 3 and one line naming each address, well within 15 s.
"""

from __future__ import annotations

import json
import socket
import time

from tests.reliability._harness import FAST_ENGINE, Cluster, Job, Ledger, check_run, read_jsonl


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Run stopped" in line]
    assert len(errors) == 1, stderr
    return errors[0]


def test_poison_items_fail_after_one_request_with_the_nodes_message_and_bench_nobody(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    poison = [t for i, t in enumerate(job.titles) if i % 10 in (1, 4, 7)]  # 30 %
    behaviour = {"refuse": poison, "refuse_status": 400}
    nodes = [cluster.add(name, behaviour=behaviour) for name in ("n1", "n2")]
    done = job.run("run", *cluster.overrides(), *FAST_ENGINE)
    assert done.returncode == 1, done.stderr
    tally = check_run(job, "run")
    records = {r["input"]["title"]: r for r in read_jsonl(job.run_dir("run") / "results.jsonl")}
    for title, record in records.items():
        if title in poison:
            assert record["status"] == "failed" and record["attempts"] == 1
            assert "HTTP 400: refused: this row always fails here" in record["error"]
        else:
            assert record["status"] == "ok"
    sent = [r["title"] for n in nodes for r in n.requests() if not r["probe"]]
    assert sorted(sent) == sorted(job.titles)  # each item once, poison included
    report = json.loads((job.run_dir("run") / "report.json").read_text())
    assert all(n["errors"] == 0 and n["health"] == "admitted" for n in report["nodes"].values())
    ledger.add("policy", "30 % bad requests", exit=done.returncode, **tally.row())


def test_a_run_whose_every_request_is_refused_stops_early_with_exit_2(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    node = cluster.add("n1", behaviour={"refuse": ["Film"], "refuse_status": 400})
    done = job.run("run", *cluster.overrides(), *FAST_ENGINE)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "the first 5 requests were all refused with HTTP 400" in line
    assert "refused: this row always fails here" in line
    assert sum(1 for r in node.requests() if not r["probe"]) <= 6
    ledger.add("policy", "every request refused", exit=done.returncode)


def test_max_tokens_past_the_nodes_context_is_refused_before_sending(
    cluster: Cluster, job: Job, ledger: Ledger
) -> None:
    node = cluster.add("n1")
    done = job.run("run", *cluster.overrides(), "job.max_tokens=1000000")
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "max_tokens=1000000 does not fit node" in line and "2048 tokens" in line
    assert node.requests() == []
    ledger.add("policy", "max_tokens past the context", exit=done.returncode)


def test_a_run_where_no_node_answers_stops_within_15_s_naming_each_address(
    job: Job, ledger: Ledger
) -> None:
    ports = [closed_port(), closed_port()]
    listed = ", ".join(f"{{address: '127.0.0.1:{p}'}}" for p in ports)
    started = time.monotonic()
    done = job.run("run", "cluster=static", f"cluster.nodes=[{listed}]")
    took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    line = one_error_line(done.stderr)
    assert line.startswith("error: no node answers:")
    for port in ports:
        assert f"127.0.0.1:{port} (http://127.0.0.1:{port}): TransportError" in line
    assert took < 15
    ledger.add("policy", "no node answers", exit=done.returncode, seconds=round(took, 1))


def test_a_run_with_one_node_down_starts_on_the_others_and_says_which(
    cluster: Cluster, job: Job
) -> None:
    cluster.add("n1")
    port = closed_port()
    nodes = cluster.overrides()[1].removesuffix("]") + f", {{address: '127.0.0.1:{port}'}}]"
    done = job.run("run", "cluster=static", nodes, *FAST_ENGINE)
    assert done.returncode == 0, done.stderr
    assert f"not answering, benched until they do: 127.0.0.1:{port}" in done.stderr + done.stdout
    check_run(job, "run")
