"""OpenAI Batch files: lines checked and translated at start-up (runner/_batch.py), the
output files (runner/_batch_output.py), and a real run on the local model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from openai.types import Completion as OpenAICompletion
from openai.types.chat import ChatCompletion

from runner._batch import BatchPlan, translate
from runner._batch_output import write_batch_files
from runner._checks import to_run_config
from runner._config import RunConfig, register
from runner._errors import ConfigError
from runner._plan import prepare
from runner._request import Style
from runner._textsynth import build

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
