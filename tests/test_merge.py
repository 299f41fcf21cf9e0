"""Shards end to end, against loopback nodes: a sharded run, its journal and report, the
environment choosing the shard, and ``python -m runner.merge`` (runner/merge.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner._shard import shard_of
from tests.loopback_node import LoopbackNode, loopback_node

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def nodes() -> Iterator[tuple[LoopbackNode, LoopbackNode]]:
    with loopback_node() as a, loopback_node() as b:
        yield a, b


def child_env(extra: dict[str, str] | None) -> dict[str, str]:
    """This environment without a job array's variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX")
    }
    return {**env, **(extra or {})}


def cli(
    tmp_path: Path,
    *overrides: str,
    nodes: tuple[LoopbackNode, ...] = (),
    run: str | None = "run",
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "runner"]
    if run is not None:
        args.append(f"hydra.run.dir={tmp_path / run}")
    args += [f"journal_dir={tmp_path / 'journal'}", "progress=off"]
    if nodes:
        listed = ", ".join(f"{{address: '{n.address}'}}" for n in nodes)
        args += ["cluster=static", f"cluster.nodes=[{listed}]"]
    args += list(overrides)
    return subprocess.run(
        args, cwd=cwd, env=child_env(env), capture_output=True, text=True, timeout=120, check=False
    )


def merge(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.merge", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())


def same_work(path: Path) -> set[tuple[Any, ...]]:
    """What the records say of each item, apart from timings and nodes."""
    keep = ("id", "index", "key", "status", "input")
    return {(*(json.dumps(r[k]) for k in keep), json.dumps(r.get("answer"))) for r in records(path)}


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(("job", "output"), [("movie_details", list), ("movie_synopsis", dict)])
def test_two_shards_merged_give_what_the_unsharded_run_gives(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode], job: str, output: type
) -> None:
    a, b = nodes
    whole = cli(
        tmp_path,
        f"job={job}",
        f"journal_dir={tmp_path / 'whole-journal'}",
        nodes=nodes,
        run="whole",
    )
    assert whole.returncode == 0, whole.stderr
    a.seen.clear()
    b.seen.clear()
    first = cli(tmp_path, f"job={job}", "shard=0/2", nodes=nodes, run="s0")
    assert first.returncode == 0, first.stderr
    assert sum(a.seen.values()) > 0 and not b.seen  # split: node j goes to shard j mod 2
    second = cli(tmp_path, f"job={job}", "shard=1/2", nodes=nodes, run="s1")
    assert second.returncode == 0, second.stderr
    assert sum(a.seen.values()) + sum(b.seen.values()) == 20  # each item sent once

    for i in (0, 1):
        line = report(tmp_path / f"s{i}")["shard"]
        assert (line["index"], line["count"], line["job_items"]) == (i, 2, 20)
        assert not (tmp_path / f"s{i}" / f"{job}.json").exists()  # the merge builds it
    assert sum(report(tmp_path / f"s{i}")["shard"]["items"] for i in (0, 1)) == 20
    journals = sorted(p.name for p in (tmp_path / "journal").glob("*.jsonl"))
    assert journals == [f"{job}.shard-0-of-2.jsonl", f"{job}.shard-1-of-2.jsonl"]

    merged = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "merged")
    assert merged.returncode == 0, merged.stderr
    assert "merged 2 of 2 shards, 20/20 ok" in merged.stdout
    out = json.loads((tmp_path / "merged" / f"{job}.json").read_text())
    assert isinstance(out, output) and len(out) == 20
    assert out == json.loads((tmp_path / "whole" / f"{job}.json").read_text())
    assert same_work(tmp_path / "merged" / "results.jsonl") == same_work(
        tmp_path / "whole" / "results.jsonl"
    )
    totals = report(tmp_path / "merged")["totals"]
    assert totals == {**totals, "items": 20, "ok": 20, "failed": 0, "unfinished": 0}


def test_merging_twice_gives_the_same_files_and_never_touches_a_shard(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    for i in (0, 1):
        assert (
            cli(
                tmp_path, "job=movie_details", f"shard={i}/2", nodes=nodes, run=f"big/shard-{i}"
            ).returncode
            == 0
        )
    before = {i: digests(tmp_path / "big" / f"shard-{i}") for i in (0, 1)}
    once = merge(tmp_path / "big")  # a folder of shard run directories stands for them all
    assert once.returncode == 0, once.stderr
    merged = tmp_path / "big" / "movie_details_merged"  # the default: beside the shards
    first = digests(merged)
    assert {"results.jsonl", "report.json", "movie_details.json"} <= set(first)
    again = merge(tmp_path / "big")  # the earlier merge's folder is not taken for a shard
    assert again.returncode == 0, again.stderr
    assert digests(merged) == first
    assert {i: digests(tmp_path / "big" / f"shard-{i}") for i in (0, 1)} == before

    into_shard = merge(tmp_path / "big", "--out", tmp_path / "big" / "shard-1")
    assert into_shard.returncode == 2 and "never writes into a shard" in into_shard.stderr
    assert digests(tmp_path / "big" / "shard-1") == before[1]


def test_merge_refuses_a_missing_shard_naming_it_unless_allowed(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    for i in (0, 2):
        assert (
            cli(
                tmp_path,
                "job=movie_details",
                f"shard={i}/4",
                "shard_nodes=share",
                "engine.slots=4",  # the nodes do not say theirs: each shard gets one of each
                nodes=nodes,
                run=f"s{i}",
            ).returncode
            == 0
        )
    refused = merge(tmp_path / "s0", tmp_path / "s2", "--out", tmp_path / "merged")
    assert refused.returncode == 2
    assert (
        refused.stderr.count("\n") == 1
        and "shards 1, 3 of 4 of job movie_details missing" in refused.stderr
    )
    assert not (tmp_path / "merged").exists()  # nothing written

    allowed = merge(
        tmp_path / "s0", tmp_path / "s2", "--out", tmp_path / "merged", "--allow-incomplete"
    )
    assert allowed.returncode == 1, allowed.stderr
    assert "shards 1, 3 of 4" in allowed.stderr
    listed = json.loads((tmp_path / "merged" / "movie_details.json").read_text())
    held = report(tmp_path / "s0")["shard"]["items"] + report(tmp_path / "s2")["shard"]["items"]
    assert len(listed) == 20 and 20 - listed.count(None) == held
    merged = report(tmp_path / "merged")
    assert merged["merged"]["missing"] == [1, 3] and not merged["merged"]["complete"]


def test_an_incomplete_shard_is_refused_and_rerunning_it_sends_only_what_is_missing(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    a, b = nodes
    a.refuse = b.refuse = {"Titanic"}
    codes = [
        cli(
            tmp_path,
            "job=movie_details",
            f"shard={i}/2",
            "engine.max_attempts=2",
            nodes=nodes,
            run=f"s{i}",
        ).returncode
        for i in (0, 1)
    ]
    assert sorted(codes) == [0, 1]
    bad = codes.index(1)
    refused = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "merged")
    assert refused.returncode == 2
    assert f"shard {bad}/2 ({tmp_path / f's{bad}'}): 1 of its" in refused.stderr
    assert "(1 failed, 0 unfinished)" in refused.stderr

    a.refuse = b.refuse = set()
    a.seen.clear()
    b.seen.clear()
    again = cli(tmp_path, "job=movie_details", f"shard={bad}/2", nodes=nodes, run=f"s{bad}-again")
    assert again.returncode == 0, again.stderr
    sent = list(a.seen) + list(b.seen)
    assert len(sent) == 1 and "Titanic" in sent[0]
    dirs = [tmp_path / ("s0" if bad else "s0-again"), tmp_path / ("s1-again" if bad else "s1")]
    done = merge(*dirs, "--out", tmp_path / "merged")
    assert done.returncode == 0, done.stderr
    assert None not in json.loads((tmp_path / "merged" / "movie_details.json").read_text())

    twice = merge(*dirs, tmp_path / f"s{bad}", "--out", tmp_path / "merged2")
    assert twice.returncode == 2 and f"shard {bad}/2 is given twice" in twice.stderr


def test_merge_refuses_shards_of_different_work(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    assert cli(tmp_path, "job=movie_details", "shard=0/2", nodes=nodes, run="s0").returncode == 0
    other = cli(
        tmp_path, "job=movie_details", "shard=1/2", "job.temperature=0.1", nodes=nodes, run="s1"
    )
    assert other.returncode == 0, other.stderr
    refused = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "merged")
    assert refused.returncode == 2 and "shards of different work" in refused.stderr
    unsharded = cli(tmp_path, "job=movie_details", nodes=nodes, run="whole")
    assert unsharded.returncode == 0
    not_shard = merge(tmp_path / "whole")
    assert not_shard.returncode == 2 and "not a shard's" in not_shard.stderr


def test_a_killed_shard_without_a_report_is_refused_by_merge(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    assert cli(tmp_path, "job=movie_details", "shard=0/2", nodes=nodes, run="s0").returncode == 0
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "results.jsonl").write_text("")
    refused = merge(tmp_path / "s0", tmp_path / "s1")
    assert refused.returncode == 2 and "no report.json: the run there did not end" in refused.stderr


@pytest.mark.parametrize(
    ("env", "overrides", "index", "source"),
    [
        (
            {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"},
            [],
            1,
            "SLURM_ARRAY_TASK_ID=1",
        ),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "1"}, ["shards=2"], 1, "shards=2"),
        ({"JOB_COMPLETION_INDEX": "0"}, ["shards=2"], 0, "JOB_COMPLETION_INDEX=0"),
    ],
)
def test_the_environment_of_a_job_array_selects_the_shard(
    tmp_path: Path,
    nodes: tuple[LoopbackNode, LoopbackNode],
    env: dict[str, str],
    overrides: list[str],
    index: int,
    source: str,
) -> None:
    proc = cli(tmp_path, "job=movie_details", *overrides, nodes=nodes, env=env)
    assert proc.returncode == 0, proc.stderr
    line = report(tmp_path / "run")["shard"]
    assert (line["index"], line["count"]) == (index, 2) and source in line["source"]
    assert line["journal"].endswith(f"movie_details.shard-{index}-of-2.jsonl")
    for record in records(tmp_path / "run" / "results.jsonl"):
        assert shard_of(record["key"], 2) == index


@pytest.mark.parametrize(
    ("env", "overrides", "fragment"),
    [
        (
            {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "2"},
            [],
            "SLURM_ARRAY_TASK_ID=3 is out of range",
        ),
        ({"JOB_COMPLETION_INDEX": "2"}, ["shards=2"], "JOB_COMPLETION_INDEX=2 is out of range"),
        ({}, ["shard=5/4"], "shard=5/4"),
        ({}, ["shard=x"], "shard='x'"),
        ({}, ["shard=0/2", "shard_nodes=split"], None),  # two nodes, two shards: fine
        ({}, ["shard=0/3"], "2 nodes cannot be split among 3 shards"),
    ],
)
def test_a_bad_shard_is_one_line_exit_2_and_nothing_is_sent(
    tmp_path: Path,
    nodes: tuple[LoopbackNode, LoopbackNode],
    env: dict[str, str],
    overrides: list[str],
    fragment: str | None,
) -> None:
    proc = cli(tmp_path, "job=movie_details", "dry_run=true", *overrides, nodes=nodes, env=env)
    if fragment is None:
        assert proc.returncode == 0, proc.stderr
        return
    proc = cli(tmp_path, "job=movie_details", *overrides, nodes=nodes, env=env)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not nodes[0].seen and not nodes[1].seen
    assert not list(tmp_path.glob("journal/*.jsonl"))  # no journal (a lock file at most)


def test_dry_run_and_probe_show_the_shard(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    dry = cli(tmp_path, "job=movie_details", "dry_run=true", "shard=1/2", nodes=nodes)
    assert dry.returncode == 0, dry.stderr
    assert "shard: 1/2 (shard=1/2)" in dry.stderr and "of the job's 20 items" in dry.stderr
    assert nodes[1].address in dry.stderr and nodes[0].address not in dry.stderr
    probe = cli(tmp_path, "job=probe", "shard=1/2", nodes=nodes, run="probe")
    assert "Shard 1/2 (shard=1/2)" in probe.stderr, probe.stderr
    found = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert [n["node"] for n in found["nodes"]] == [nodes[1].address]
    assert found["shard"] == {"index": 1, "count": 2, "source": "shard=1/2"}


def test_a_shards_default_run_directory_ends_in_its_shard(tmp_path: Path) -> None:
    proc = cli(
        tmp_path,
        "job=movie_details",
        "dry_run=true",
        f"prompts_dir={ROOT / 'prompts'}",
        run=None,
        env={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    made = [p.name for p in (tmp_path / "outputs" / "runs").glob("*/*")]
    assert len(made) == 1 and made[0].endswith("_movie_details_shard-1-of-3")


def test_merge_refuses_a_result_that_is_not_of_its_shard(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    for i in (0, 1):
        proc = cli(tmp_path, "job=movie_details", f"shard={i}/2", nodes=nodes, run=f"s{i}")
        assert proc.returncode == 0, proc.stderr
    stray = (tmp_path / "s1" / "results.jsonl").read_text().splitlines()[0]
    with open(tmp_path / "s0" / "results.jsonl", "a") as results:
        results.write(stray + "\n")
    refused = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "merged")
    assert refused.returncode == 2 and "belongs to shard 1, not 0" in refused.stderr
    assert not (tmp_path / "merged").exists()
