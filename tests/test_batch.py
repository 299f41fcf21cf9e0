"""OpenAI Batch files: lines checked and translated at start-up (runner/_batch.py), the
output files (runner/_batch_output.py), and a real run on the local model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hydra import compose, initialize_config_dir
from openai.types import BatchError, ErrorObject
from openai.types import Completion as OpenAICompletion
from openai.types.chat import ChatCompletion

from runner._batch import BatchPlan, translate
from runner._batch_output import write_batch_files
from runner._checks import to_run_config
from runner._config import EngineConfig, RunConfig, register
from runner._engine import Engine
from runner._errors import ConfigError
from runner._nodes import NodeSpec
from runner._plan import prepare
from runner._request import Api, GenerationRequest, Style
from runner._textsynth import build
from runner._work import Work

CONF = Path(__file__).resolve().parents[1] / "conf"
EXAMPLE = Path(__file__).resolve().parents[1] / "prompts" / "batch_example.jsonl"


def load(*overrides: str) -> RunConfig:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_run_config(compose("config", overrides=["job=openai_batch", *overrides]))


def chat(custom_id: str = "a", **body: Any) -> dict[str, Any]:
    messages = body.pop("messages", [{"role": "user", "content": "Hi"}])
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt", "messages": messages, **body},
    }


def write(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "batch.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def scan(tmp_path: Path, *lines: Any, overrides: tuple[str, ...] = ()) -> BatchPlan:
    path = write(tmp_path, *lines)
    plan = prepare(load(f"job.input.path={path}", *overrides))
    assert isinstance(plan, BatchPlan)
    plan.scan()
    return plan


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({**chat(), "method": "GET"}, ":1: method must be POST"),
        ({**chat(), "url": "/v1/embeddings"}, ":1: unknown url '/v1/embeddings'"),
        ({**chat(), "body": "x"}, ":1: body must be a JSON object"),
        (chat(messages=[]), ":1: body.messages must be a non-empty list"),
        ({**chat(), "url": "/v1/completions"}, ":1: body.prompt must be a string"),
        ({k: v for k, v in chat().items() if k != "custom_id"}, ":1: no id field 'custom_id'"),
        ("{not json", ":1: not valid JSON"),
        (chat(messages=[{"role": "assistant", "content": "x"}]), "expected a user message"),
        (chat(max_tokens=0), "body.max_tokens must be a positive integer"),
        (chat(tools=[]), "body.tools is not supported on TextSynth nodes"),
    ],
)
def test_a_bad_line_stops_the_run_at_start_up_naming_its_line(
    tmp_path: Path, line: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        scan(tmp_path, line)
    assert str(info.value).startswith(str(tmp_path / "batch.jsonl"))


def test_a_duplicate_custom_id_names_both_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":2: duplicate id 'a' \(first seen on line 1\)"):
        scan(tmp_path, chat("a"), chat("a"))


def test_a_metadata_field_missing_from_a_line_is_an_error_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":1: no field 'team' \(job.metadata\)"):
        scan(tmp_path, chat("a"), overrides=("job.metadata=[team]",))


def test_a_multi_turn_chat_becomes_textsynth_messages_system_and_parameters() -> None:
    cfg = load()
    line = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another?"},
        ],
        max_completion_tokens=9,
        temperature=0.1,
        stop="\n",
        n=2,
        seed=42,
        response_format={"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
        metadata={"team": "x"},
    )
    request = translate(line, cfg, where="f:1")
    path, body = build(request, stream=False)
    assert path == "/v1/engines/smollm2/chat"
    assert body["messages"] == ["Name a colour.", "Blue.", "Another?"]
    assert body["system"] == "Be brief."
    assert (body["max_tokens"], body["temperature"], body["stop"], body["n"]) == (9, 0.1, ["\n"], 2)
    assert body["seed"] == 42 and body["schema"] == {"type": "object"}
    assert body["top_k"] == cfg.model.top_k  # the model's default where the line says nothing


def test_a_completion_line_becomes_a_textsynth_completion() -> None:
    line = {**chat(), "url": "/v1/completions", "body": {"prompt": "Once", "max_tokens": 3}}
    request = translate(line, load(), where="f:1")
    assert request.style is Style.completion
    path, body = build(request, stream=True)
    assert path.endswith("/completions") and body["prompt"] == "Once" and body["max_tokens"] == 3


def test_openai_nodes_get_the_body_as_it_is_with_the_clusters_model() -> None:
    from runner._openai import build as openai_build

    line = chat(tools=[{"type": "function"}], max_tokens=5)
    request = translate(line, load("model=smollm2_openai"), where="f:1")
    path, body = openai_build(request, stream=False)
    assert path == "/v1/chat/completions"
    assert body["tools"] == [{"type": "function"}] and body["max_tokens"] == 5
    assert body["model"] == "smollm2" and body["messages"] == line["body"]["messages"]


def test_the_resume_key_changes_with_the_lines_request_only() -> None:
    cfg = load()
    key = translate(chat(max_tokens=5), cfg, where="f:1").key()
    assert translate(chat("other", max_tokens=5), cfg, where="f:1").key() == key
    assert translate(chat(max_tokens=6), cfg, where="f:1").key() != key


def test_every_custom_id_lands_once_in_output_or_errors_with_openai_shaped_bodies(
    tmp_path: Path,
) -> None:
    plan = scan(
        tmp_path,
        chat("ok", metadata={"k": "v"}),
        chat("failed", max_tokens=2),
        chat("missing", max_tokens=3),
        {**chat("text"), "url": "/v1/completions", "body": {"prompt": "x"}},
    )
    works = list(plan.work())
    assert works[0].metadata == {"k": "v"}
    common = {"input_tokens": 4, "output_tokens": 2, "finish_reason": "length"}
    records = [
        {"index": 1, "status": "failed", "error": "node said 400"},
        {"index": 0, "status": "ok", "answer": ["a", "b"], "key": works[0].key, **common},
        {"index": 3, "status": "ok", "answer": ["t"], "key": works[3].key, **common},
        {"index": 0, "status": "failed", "error": "an accepted record wins"},
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_batch_files(tmp_path, results, plan.work())
    out = [json.loads(x) for x in (tmp_path / "batch_output.jsonl").read_text().splitlines()]
    err = [json.loads(x) for x in (tmp_path / "batch_errors.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in out] == ["ok", "text"]
    assert [(x["custom_id"], x["error"]["code"]) for x in err] == [
        ("failed", "request_failed"),
        ("missing", "not_finished"),
    ]
    body = ChatCompletion.model_validate(out[0]["response"]["body"])
    assert [c.message.content for c in body.choices] == ["a", "b"]
    assert body.usage is not None and body.usage.total_tokens == 6
    assert OpenAICompletion.model_validate(out[1]["response"]["body"]).choices[0].text == "t"


def batch_files(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from tests.test_e2e_local import read_jsonl

    return read_jsonl(run / "batch_output.jsonl"), read_jsonl(run / "batch_errors.jsonl")


@pytest.mark.model
@pytest.mark.parametrize("protocol", ["textsynth", "openai"])
def test_a_batch_file_runs_on_the_local_model_and_resumes_what_is_missing(
    tmp_path: Path, protocol: str
) -> None:
    from tests.test_e2e_local import runner

    extra = ["cluster=local_openai", "model=smollm2_openai"] if protocol == "openai" else []
    args = ("job=openai_batch", f"job.input.path={EXAMPLE}", "cluster.local.nodes=1", *extra)
    first = runner(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    out, err = batch_files(tmp_path / "run")
    ids = [json.loads(x)["custom_id"] for x in EXAMPLE.read_text().splitlines()]
    assert [x["custom_id"] for x in out] == ids and err == []
    for line in out:
        body = line["response"]["body"]
        if body["object"] == "chat.completion":
            assert ChatCompletion.model_validate(body).usage.completion_tokens > 0  # type: ignore[union-attr]
        else:
            assert OpenAICompletion.model_validate(body).choices[0].text is not None
    journal = tmp_path / "journal" / "openai_batch.jsonl"
    kept = journal.read_text().splitlines()[:2]  # a crash lost the last two results
    journal.write_text("".join(x + "\n" for x in kept))
    again = runner(tmp_path, *args, run="again")
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    assert report["totals"]["reused"] == 2 and report["totals"]["requests_sent"] == 2
    out, err = batch_files(tmp_path / "again")
    assert sorted(x["custom_id"] for x in out) == sorted(ids) and err == []


# ------------------------------------------------------------------ HTTP statuses


def test_a_line_the_node_refused_carries_its_status_and_an_openai_error_body(
    tmp_path: Path,
) -> None:
    plan = scan(tmp_path, chat("refused"), chat("dropped", max_tokens=2), chat("ok", max_tokens=3))
    works = list(plan.work())
    records = [
        {"index": 0, "status": "failed", "key": works[0].key, "error": "n: HTTP 400: too long",
         "http_status": 400},
        {"index": 1, "status": "failed", "key": works[1].key, "error": "n: timed out",
         "http_status": None},
        {"index": 2, "status": "ok", "answer": ["x"], "key": works[2].key},
    ]  # fmt: skip
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_batch_files(tmp_path, results, plan.work())
    out, err = batch_files(tmp_path)
    assert [x["custom_id"] for x in out] == ["ok"]
    refused, dropped = err
    assert refused["custom_id"] == "refused" and refused["error"] is None
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["request_id"].startswith("req_")
    error = ErrorObject.model_validate(refused["response"]["body"]["error"])
    assert error.message == "n: HTTP 400: too long" and error.type == "invalid_request_error"
    assert dropped["response"] is None
    assert BatchError.model_validate(dropped["error"]).code == "request_failed"


def batch_input(tmp_path: Path) -> Path:
    """Six lines, chats and completions; the two that mention "Bad" are refused by the
    loopback nodes of these tests."""
    lines = [
        chat("c0", messages=[{"role": "user", "content": 'Tell me of "Alien"'}]),
        chat("c1", messages=[{"role": "user", "content": "Bad idea"}], max_tokens=5),
        {**chat("t2"), "url": "/v1/completions", "body": {"prompt": "Once upon"}},
        {**chat("t3"), "url": "/v1/completions", "body": {"prompt": "Bad start"}},
        chat("c4", messages=[{"role": "user", "content": 'And of "Heat"'}], max_tokens=7),
        {**chat("t5"), "url": "/v1/completions", "body": {"prompt": "There was"}},
    ]
    return write(tmp_path, *lines)


@pytest.mark.parametrize("status", [400, 500, 503])
def test_lines_a_node_refuses_carry_the_nodes_status_and_the_rest_parse_as_openai_types(
    tmp_path: Path, status: int
) -> None:
    from tests.loopback_node import loopback_node
    from tests.test_merge import cli, records

    with loopback_node() as node:
        node.refuse, node.refuse_status = {"Bad"}, status
        proc = cli(
            tmp_path,
            "job=openai_batch",
            f"job.input.path={batch_input(tmp_path)}",
            "engine.max_attempts=2",
            "engine.bad_request_stop=0",  # the refusals are the items', not a setting's
            nodes=(node,),
        )
    assert proc.returncode == 1, proc.stderr[-3000:]  # two items failed
    failed = {
        r["id"]: r for r in records(tmp_path / "run" / "results.jsonl") if r["status"] != "ok"
    }
    assert {k: r["http_status"] for k, r in failed.items()} == {"c1": status, "t3": status}
    out, err = batch_files(tmp_path / "run")
    assert [x["custom_id"] for x in out] == ["c0", "t2", "c4", "t5"]
    assert [x["custom_id"] for x in err] == ["c1", "t3"]
    for line in err:
        assert line["error"] is None and line["response"]["status_code"] == status
        ErrorObject.model_validate(line["response"]["body"]["error"])
    for line in out:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        body = line["response"]["body"]
        kind = ChatCompletion if line["custom_id"].startswith("c") else OpenAICompletion
        assert kind.model_validate(body).model == "smollm2"


async def test_a_failed_record_keeps_the_status_of_the_answer_that_failed_it_and_none_without(
    autojump_clock: Any,
) -> None:
    """The engine's records: a 400 (failed at once) and a 500 (retried, then given up) keep
    their status; a connection refused, or a body that is not an answer, keep none."""

    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["prompt"]
        if prompt == "unreachable":
            raise httpx.ConnectError("connection refused", request=request)
        statuses = {"bad": 400, "broken": 500, "garbled": 200}
        if prompt in statuses:
            return httpx.Response(statuses[prompt], text="{not json")
        return httpx.Response(200, json={"text": "fine", "reached_end": True})

    prompts = ["bad", "broken", "unreachable", "garbled", "fine"]
    works = []
    for i, prompt in enumerate(prompts):
        request = GenerationRequest(Api.textsynth, Style.completion, "e", prompt, seed=1)
        works.append(Work(prompt, i, {}, request, request.key()))
    records: list[dict[str, Any]] = []
    engine = Engine(
        [NodeSpec("a", "http://a:1"), NodeSpec("b", "http://b:1")],
        EngineConfig(hedge=False, max_attempts=2, bad_request_stop=0),
        api=Api.textsynth,
        style=Style.completion,
        engine_id="e",
        on_result=records.append,
        transport=httpx.MockTransport(handler),
    )
    await engine.run(iter(works))
    got = {r["id"]: (r["status"], r.get("http_status")) for r in records}
    assert got == {
        "bad": ("failed", 400),
        "broken": ("failed", 500),
        "unreachable": ("failed", None),
        "garbled": ("failed", None),
        "fine": ("ok", None),
    }
