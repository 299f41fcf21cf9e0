"""Merging the shards of an OpenAI Batch job (``job.kind: batch``): ``python -m runner.merge``
writes ``batch_output.jsonl`` and ``batch_errors.jsonl`` as the unsharded run does
(runner/_merge.py, runner/_batch_output.py), against loopback nodes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai.types import Completion as OpenAICompletion
from openai.types import ErrorObject
from openai.types.chat import ChatCompletion

from tests.loopback_node import LoopbackNode, loopback_node
from tests.test_merge import cli, digests, merge, records, report

FILES = ("batch_output.jsonl", "batch_errors.jsonl")


@pytest.fixture
def nodes() -> Iterator[tuple[LoopbackNode, LoopbackNode]]:
    with loopback_node() as a, loopback_node() as b:
        yield a, b


def batch_input(tmp_path: Path, lines: int = 12) -> Path:
    """Chat and completion lines, alternating; line 5 and line 8 mention "Bad"."""
    rows = []
    for i in range(lines):
        text = f'{"Bad" if i in (5, 8) else "Tell"} me of "Film {i}"'
        if i % 2:
            rows.append({"url": "/v1/completions", "body": {"prompt": text, "max_tokens": 9}})
        else:
            rows.append({"url": "/v1/chat/completions", "body": {"messages": [
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": text}
            ]}})  # fmt: skip
    path = tmp_path / "batch.jsonl"
    path.write_text(
        "".join(
            json.dumps({"custom_id": f"line-{i}", "method": "POST", **row}) + "\n"
            for i, row in enumerate(rows)
        )
    )
    return path


def batch_lines(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Both files' lines, without what legitimately differs between two runs of one job:
    when each answer was made (``created``) and which node a failure names."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name in FILES:
        lines = [json.loads(x) for x in (folder / name).read_text().splitlines()]
        for line in lines:
            body = (line["response"] or {}).get("body") or {}
            body.pop("created", None)
            if "error" in body:
                body["error"]["message"] = re.sub(
                    r"127\.0\.0\.1:\d+", "node", body["error"]["message"]
                )
        found[name] = lines
    return found


def run_shards(
    tmp_path: Path, nodes: tuple[LoopbackNode, ...], *extra: str, shards: tuple[int, ...] = (0, 1)
) -> None:
    for i in shards:
        proc = cli(tmp_path, "job=openai_batch", f"shard={i}/2", *extra, nodes=nodes, run=f"s{i}")
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        assert not any((tmp_path / f"s{i}" / name).exists() for name in FILES)  # the merge's


def test_two_shards_of_a_batch_job_merge_into_the_unsharded_runs_batch_files(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    job = f"job.input.path={batch_input(tmp_path)}"
    whole = cli(
        tmp_path, "job=openai_batch", job, f"journal_dir={tmp_path / 'wj'}", nodes=nodes, run="w"
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_shards(tmp_path, nodes, job)
    assert all(report(tmp_path / f"s{i}")["shard"]["items"] > 0 for i in (0, 1))

    merged = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m")
    assert merged.returncode == 0, merged.stderr
    assert f"12/12 ok -> {tmp_path / 'm' / 'batch_output.jsonl'}" in merged.stdout
    got = batch_lines(tmp_path / "m")
    assert got == batch_lines(tmp_path / "w")
    out = got["batch_output.jsonl"]
    assert [x["custom_id"] for x in out] == [f"line-{i}" for i in range(12)]  # input order
    assert got["batch_errors.jsonl"] == []
    for raw in (tmp_path / "m" / "batch_output.jsonl").read_text().splitlines():
        body = json.loads(raw)["response"]["body"]
        kind = ChatCompletion if body["object"] == "chat.completion" else OpenAICompletion
        assert kind.model_validate(body).model == "smollm2"

    first = digests(tmp_path / "m")
    again = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m")
    assert again.returncode == 0, again.stderr
    assert digests(tmp_path / "m") == first  # idempotent, bytes and all


def test_refused_lines_of_a_sharded_batch_job_merge_with_the_nodes_status(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    for node in nodes:
        node.refuse, node.refuse_status = {"Bad"}, 422
    job = (f"job.input.path={batch_input(tmp_path)}", "engine.bad_request_stop=0")
    whole = cli(
        tmp_path, "job=openai_batch", *job, f"journal_dir={tmp_path / 'wj'}", nodes=nodes, run="w"
    )
    assert whole.returncode == 1, whole.stderr[-3000:]  # two lines failed
    run_shards(tmp_path, nodes, *job)
    refused = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m")
    assert refused.returncode == 2 and "not accepted" in refused.stderr

    merged = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m", "--allow-incomplete")
    assert merged.returncode == 1, merged.stderr
    got = batch_lines(tmp_path / "m")
    assert got == batch_lines(tmp_path / "w")
    errors = got["batch_errors.jsonl"]
    assert [x["custom_id"] for x in errors] == ["line-5", "line-8"]
    for line in errors:
        assert line["error"] is None and line["response"]["status_code"] == 422
        ErrorObject.model_validate(line["response"]["body"]["error"])
    ids = [x["custom_id"] for x in got["batch_output.jsonl"]]
    assert ids == [f"line-{i}" for i in range(12) if i not in (5, 8)]


def test_a_batch_merge_with_a_shard_missing_is_refused_naming_it_unless_allowed(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    run_shards(tmp_path, nodes, f"job.input.path={batch_input(tmp_path)}", shards=(0,))
    refused = merge(tmp_path / "s0", "--out", tmp_path / "m")
    assert refused.returncode == 2
    assert "shard 1 of 2 of job openai_batch missing (given: 0)" in refused.stderr
    assert not (tmp_path / "m").exists()

    allowed = merge(tmp_path / "s0", "--out", tmp_path / "m", "--allow-incomplete")
    assert allowed.returncode == 1, allowed.stderr
    held = [r["id"] for r in records(tmp_path / "s0" / "results.jsonl")]
    got = batch_lines(tmp_path / "m")
    assert [x["custom_id"] for x in got["batch_output.jsonl"]] == sorted(held, key=_index)
    assert got["batch_errors.jsonl"] == []  # shard 1's lines have no record to name them


def _index(custom_id: str) -> int:
    return int(custom_id.removeprefix("line-"))
