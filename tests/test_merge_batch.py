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
from openai.types import BatchError, ErrorObject
from openai.types import Completion as OpenAICompletion
from openai.types.chat import ChatCompletion

from runner._batch_output import BatchItem, output_line
from runner._shard import input_fingerprint
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
    unheld = [f"line-{i}" for i in range(12) if f"line-{i}" not in held]
    assert [x["custom_id"] for x in got["batch_errors.jsonl"]] == unheld  # named by the input


def _index(custom_id: str) -> int:
    return int(custom_id.removeprefix("line-"))


def every_line(folder: Path) -> list[dict[str, Any]]:
    """Both files' lines as written, each file checked to be in input order, merged back
    into input order."""
    found = []
    for name in FILES:
        lines = [json.loads(x) for x in (folder / name).read_text().splitlines()]
        order = [_index(x["custom_id"]) for x in lines]
        assert order == sorted(order)
        found += lines
    return sorted(found, key=lambda x: _index(x["custom_id"]))


def check_openai_shapes(lines: list[dict[str, Any]]) -> None:
    """Every answered body parses as the ``openai`` package's type; every line without a
    response has a Batch error whose shape is the unsharded run's ``not_finished`` line's."""
    unsharded = output_line(BatchItem("x", 0, "", True, "smollm2"), None)
    for line in lines:
        if line["response"] is None:
            assert line.keys() == unsharded.keys()
            assert line["error"].keys() == unsharded["error"].keys()
            assert BatchError.model_validate(line["error"]).code in (
                "not_finished",
                "request_failed",
            )
            continue
        body = line["response"]["body"]
        if line["response"]["status_code"] != 200:
            ErrorObject.model_validate(body["error"])
        else:
            kind = ChatCompletion if body["object"] == "chat.completion" else OpenAICompletion
            assert kind.model_validate(body).model == "smollm2"


def refused_then_merged_with(tmp_path: Path, reason: str, input_path: Path) -> str:
    """Merge shard 0 alone: refused (exit 2, one line naming ``reason``, nothing written),
    then merged with ``--input input_path`` (exit 1: incomplete). The refusal's text."""
    refused = merge(tmp_path / "s0", "--out", tmp_path / "m", "--allow-incomplete")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and reason in refused.stderr
    assert not (tmp_path / "m").exists()  # nothing written
    pointed = merge(
        tmp_path / "s0", "--out", tmp_path / "m", "--allow-incomplete", "--input", input_path
    )
    assert pointed.returncode == 1, pointed.stderr
    assert len(every_line(tmp_path / "m")) == 12
    return refused.stderr


def test_an_incomplete_merge_writes_every_custom_id_once_with_missing_lines_as_not_finished(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    run_shards(tmp_path, nodes, f"job.input.path={batch_input(tmp_path)}", shards=(0,))
    held = {r["id"] for r in records(tmp_path / "s0" / "results.jsonl")}
    assert 0 < len(held) < 12

    merged = merge(tmp_path / "s0", "--out", tmp_path / "m", "--allow-incomplete")
    assert merged.returncode == 1, merged.stderr
    lines = every_line(tmp_path / "m")
    assert [x["custom_id"] for x in lines] == [f"line-{i}" for i in range(12)]  # each once
    unfinished = [x["custom_id"] for x in lines if x["response"] is None]
    assert unfinished == [f"line-{i}" for i in range(12) if f"line-{i}" not in held]
    assert {x["error"]["code"] for x in lines if x["response"] is None} == {"not_finished"}
    check_openai_shapes(lines)
    assert report(tmp_path / "m")["merged"]["missing"] == [1]  # the report still says so
    assert report(tmp_path / "m")["totals"]["unfinished"] == len(unfinished)

    first = digests(tmp_path / "m")
    again = merge(tmp_path / "s0", "--out", tmp_path / "m", "--allow-incomplete")
    assert again.returncode == 1, again.stderr
    assert digests(tmp_path / "m") == first  # idempotent, bytes and all


def test_lines_a_shard_did_not_finish_are_not_finished_among_its_refused_lines_in_input_order(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    for node in nodes:
        node.refuse, node.refuse_status = {"Bad"}, 422
    run_shards(
        tmp_path, nodes, f"job.input.path={batch_input(tmp_path)}", "engine.bad_request_stop=0"
    )
    results = tmp_path / "s1" / "results.jsonl"
    kept = [r for r in records(results) if r["status"] == "failed"]  # as if stopped early
    dropped = sorted(_index(r["id"]) for r in records(results) if r["status"] == "ok")
    assert dropped
    results.write_text("".join(json.dumps(r) + "\n" for r in kept))

    merged = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m", "--allow-incomplete")
    assert merged.returncode == 1, merged.stderr
    lines = every_line(tmp_path / "m")
    assert [x["custom_id"] for x in lines] == [f"line-{i}" for i in range(12)]
    errors = batch_lines(tmp_path / "m")["batch_errors.jsonl"]
    refused = [x["custom_id"] for x in errors if x["response"] is not None]
    unfinished = [x["custom_id"] for x in errors if x["response"] is None]
    assert refused == ["line-5", "line-8"]
    assert unfinished == [f"line-{i}" for i in dropped]
    check_openai_shapes(lines)


def test_an_incomplete_merge_whose_input_file_changed_is_refused(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    path = batch_input(tmp_path)
    run_shards(tmp_path, nodes, f"job.input.path={path}", shards=(0,))
    original = tmp_path / "kept" / "batch.jsonl"
    original.parent.mkdir()
    original.write_bytes(path.read_bytes())
    path.write_text(path.read_text().replace("Film 11", "Film eleven"))

    refused = refused_then_merged_with(tmp_path, f"{path} is not the file the shards ran", original)
    assert "--input PATH" in refused


def test_an_incomplete_merge_whose_input_file_is_not_there_is_refused_naming_it(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    path = batch_input(tmp_path)
    run_shards(tmp_path, nodes, f"job.input.path={path}", shards=(0,))
    moved = path.rename(tmp_path / "elsewhere.jsonl")

    refused_then_merged_with(tmp_path, f"{path}: input file not found", moved)


def test_a_complete_batch_merge_needs_no_input_file(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    path = batch_input(tmp_path)
    run_shards(tmp_path, nodes, f"job.input.path={path}")
    path.unlink()
    merged = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m")
    assert merged.returncode == 0, merged.stderr
    assert len(batch_lines(tmp_path / "m")["batch_output.jsonl"]) == 12


def test_shards_that_read_one_input_from_different_paths_merge(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    """As shards on different machines do; an incomplete merge reads the first shard's."""
    path = batch_input(tmp_path)
    copy = tmp_path / "other" / "batch.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    run_shards(tmp_path, nodes, f"job.input.path={path}", shards=(0,))
    run_shards(tmp_path, nodes, f"job.input.path={copy}", shards=(1,))
    (tmp_path / "s1" / "results.jsonl").write_text("")  # shard 1 finished nothing

    merged = merge(tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m", "--allow-incomplete")
    assert merged.returncode == 1, merged.stderr
    assert len(every_line(tmp_path / "m")) == 12


def test_an_incomplete_merge_of_shards_that_record_no_input_fingerprint_is_refused(
    tmp_path: Path, nodes: tuple[LoopbackNode, LoopbackNode]
) -> None:
    """Shards run before the fingerprint was recorded: the file cannot be checked."""
    run_shards(tmp_path, nodes, f"job.input.path={batch_input(tmp_path)}", shards=(0,))
    written = report(tmp_path / "s0")
    del written["shard"]["output"]["input_fingerprint"]
    (tmp_path / "s0" / "report.json").write_text(json.dumps(written))

    refused = merge(tmp_path / "s0", "--out", tmp_path / "m", "--allow-incomplete")
    assert refused.returncode == 2 and "record no input fingerprint" in refused.stderr
    assert not (tmp_path / "m").exists()


def test_the_input_fingerprint_ignores_layout_but_not_a_lines_content_or_place() -> None:
    lines = [(0, {"custom_id": "a", "url": "/v1/completions"}), (1, {"custom_id": "b"})]
    same = input_fingerprint(lines)
    assert input_fingerprint([(0, {"url": "/v1/completions", "custom_id": "a"}), lines[1]]) == same
    assert input_fingerprint([lines[0], (1, {"custom_id": "c"})]) != same
    assert input_fingerprint([(0, lines[1][1]), (1, lines[0][1])]) != same
    assert input_fingerprint(lines[:1]) != same
