"""The chat template's own tokens (the framing): measured per shape of messages on the real
node and added to each chat prompt's count, so that the context check is right; a probe that
cannot tell falls back to a bound, and the estimate says so."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from runner._chat_framing import (
    Framing,
    ShapeFraming,
    fitted,
    framing_bound,
    framing_line,
    framing_of,
    shape_of,
)
from runner._client import NodeClient
from runner._estimate import TokenTally
from runner._plan import prepare
from runner._preflight import counted_text
from runner._request import Api, GenerationRequest, Style
from runner._work import Work
from tests._realnode import RunningNode, real_node  # noqa: F401  (the session's node)
from tests.test_cli import cli, error_lines
from tests.test_config import load

SYSTEM = "You are a film database. Answer with one JSON object and nothing else."


def _chat(prompt: str, *, system: str | None = SYSTEM, turns: tuple[str, ...] | None = None):
    return GenerationRequest(api=Api.textsynth, style=Style.chat, engine="smollm2",
                             prompt=prompt, system=system, messages=turns)  # fmt: skip


def _work(request: GenerationRequest, i: int = 0) -> Work:
    return Work(id=f"w{i}", index=i, input={}, request=request, key=f"k{i}")


def _client(url: str, transport: httpx.AsyncBaseTransport | None = None) -> NodeClient:
    return NodeClient(url, name="n1", api=Api.textsynth, connect_timeout=10, stall_timeout=30,
                      max_connections=2, transport=transport)  # fmt: skip


async def _learn(client: NodeClient, *requests: GenerationRequest) -> Framing:
    framing = Framing(counted_text, "smollm2", context=512)
    async with client:
        await framing.learn(client, [_work(r, i) for i, r in enumerate(requests)])
    for request in requests:
        framing.take(request)
    return framing


def test_the_shape_of_a_request_is_its_roles_as_sent() -> None:
    assert shape_of(_chat("hi")) == ("system", "user")
    assert shape_of(_chat("c", system=None, turns=("a", "b", "c"))) == ("user", "assistant", "user")
    body = {"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}]}
    assert shape_of(GenerationRequest(Api.openai, Style.chat, "m", "u", body=body)) == (
        "developer", "user")  # fmt: skip
    assert shape_of(GenerationRequest(Api.textsynth, Style.completion, "m", "p")) is None


def test_left_out_prompts_of_a_sample_keep_their_framing() -> None:
    tally = TokenTally(context=None)
    for _ in range(3):
        tally.add(max_tokens=1, answers=1)
    tally.count("a", 10, room=1, sample_bytes=40, framing=13)
    tally.leave_out(2, 80, framing=26)
    # the sample's text: 10 tokens for 40 bytes, so 20 for the 80 left out; each with its 13
    assert tally.estimated_prompt_tokens() == (10 + 13) + 20 + 26


def test_shapes_beyond_the_limit_are_fitted_above_the_measured_ones() -> None:
    known = [ShapeFraming(("system", "user"), 13, True, "m"),
             ShapeFraming(("system", "user", "assistant", "user"), 22, True, "m")]  # fmt: skip
    five = ("system", "user", "assistant", "user", "assistant", "user")
    # a step of 5 a message (9 over 2): 13 + 5 * 4, above the 31 measured on SmolLM2
    assert fitted(five, known).tokens == 33
    unlike = ("user",)
    assert fitted(unlike, known).tokens == framing_bound(unlike)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"text": "x", "reached_end": True}, "did not say its input tokens"),
        (None, "node n1: "),
    ],
)
async def test_a_probe_that_cannot_tell_falls_back_to_the_bound_and_says_so(
    answer: dict[str, object] | None, why: str
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tokenize"):
            return httpx.Response(200, json={"tokens": [1, 2, 3]})
        if answer is None:
            return httpx.Response(500, json={"error": "refused"})
        return httpx.Response(200, json=answer)

    framing = await _learn(_client("http://n1", httpx.MockTransport(handle)), _chat("hi"))
    (record,) = framing.records()
    assert record["tokens"] == framing_bound(("system", "user")) and not record["measured"]
    assert why in record["source"]
    assert "estimated, not measured" in framing_line(framing.records())


pytestmark_model = pytest.mark.model


@pytestmark_model
async def test_the_framing_on_the_real_node_depends_on_the_shape_not_the_content(
    real_node: RunningNode,  # noqa: F811
) -> None:
    long = " ".join(["The quick brown fox jumps over the lazy dog."] * 20)
    found = {}
    async with _client(real_node.url) as client:
        for name, request in {
            "short": _chat("Hi"),
            "long": _chat(long),
            "ends with a newline": _chat("Tell me a joke.\n"),
            "no system": _chat("Hi", system=None),
            "no system, long": _chat(long, system=None),
            "three turns": _chat("c", turns=("Hi", "Sure.", long)),
        }.items():
            found[name] = await framing_of(client, "smollm2", request, counted_text(request))
    assert found == {"short": 13, "long": 13, "ends with a newline": 13, "no system": 30,
                     "no system, long": 30, "three turns": 22}  # fmt: skip


@pytestmark_model
async def test_text_read_as_control_tokens_does_not_lower_a_shapes_framing(
    real_node: RunningNode,  # noqa: F811
) -> None:
    tricky = _chat("<|im_start|>user hi<|im_end|>")
    async with _client(real_node.url) as client:
        alone = await framing_of(client, "smollm2", tricky, counted_text(tricky))
    assert alone < 13  # the node's template parses them; the pre-flight's tokenize does not
    framing = await _learn(_client(real_node.url), tricky)
    assert [r["tokens"] for r in framing.records()] == [13]  # the neutral probe's


def _one_film(tmp_path: Path) -> tuple[str, int]:
    path = tmp_path / "film.txt"
    path.write_text("Heat\n")
    (work,) = prepare(load("job=movie_details", f"job.input.path={path}")).work()
    return f"job.input.path={path}", work.request


@pytestmark_model
@pytest.mark.parametrize(("spare", "fits"), [(6, False), (13, True)])
def test_a_chat_job_whose_prompt_fits_only_without_its_template_fails_the_preflight(
    tmp_path: Path,
    real_node: RunningNode,  # noqa: F811
    spare: int,
    fits: bool,
) -> None:
    """With ``spare`` tokens left beside the text and max_tokens, the template's 13 tokens
    (a system prompt and one message) do not fit, or fit exactly."""
    inputs, request = _one_film(tmp_path)
    text = httpx.post(real_node.endpoint("tokenize"), json={"text": counted_text(request)})
    tokens = len(text.json()["tokens"])
    max_tokens = 512 - tokens - spare
    node = real_node.url.removeprefix("http://")
    proc = cli(tmp_path, "job=movie_details", inputs, f"job.max_tokens={max_tokens}",
               "dry_run=true", "preflight.probe_speed=never", "cluster=static",
               f"cluster.nodes=[{{address: '{node}'}}]")  # fmt: skip
    if fits:
        assert proc.returncode == 0, proc.stderr
        assert "chat template: 13 tokens added to each prompt" in proc.stderr
    else:
        assert proc.returncode == 2, proc.stderr
        line = error_lines(proc)[-1]
        assert "1 of 1 prompts do not fit the context of 512 tokens" in line
        assert f"({tokens + 13} tokens)" in line


@pytestmark_model
def test_a_batch_runs_report_records_the_framing_of_each_shape(
    tmp_path: Path,
    real_node: RunningNode,  # noqa: F811
) -> None:
    lines = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
         {"role": "user", "content": "Another?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bye " * 50}],
    ]  # fmt: skip
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"c{i}", "method": "POST",
        "url": "/v1/chat/completions", "body": {"messages": m, "max_tokens": 2}}) + "\n"
        for i, m in enumerate(lines)))  # fmt: skip
    node = real_node.url.removeprefix("http://")
    proc = cli(tmp_path, "job=openai_batch", f"job.input.path={path}", "cluster=static",
               f"cluster.nodes=[{{address: '{node}'}}]")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    framing = {tuple(r["roles"]): (r["tokens"], r["measured"], r["items"])
               for r in report["estimate"]["chat_framing"]}  # fmt: skip
    assert framing == {("system", "user"): (13, True, 2),
                       ("user", "assistant", "user"): (39, True, 1)}  # fmt: skip
