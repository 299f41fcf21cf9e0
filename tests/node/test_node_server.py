"""A real node process with the real model, over HTTP: every endpoint, streaming, errors."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from tests._realnode import REAL_NODE_SLOTS, REPO, RunningNode

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as session:
        yield session


def post(client: httpx.Client, node: RunningNode, action: str, body: Any) -> httpx.Response:
    return client.post(node.endpoint(action), json=body, headers=node.headers)


def ok(client: httpx.Client, node: RunningNode, action: str, body: Any) -> dict[str, Any]:
    answer = post(client, node, action, body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def stream_frames(client: httpx.Client, node: RunningNode, action: str, body: Any) -> bytes:
    with client.stream(
        "POST", node.endpoint(action), json=body | {"stream": True}, headers=node.headers
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        return answer.read()


def parse_frames(raw: bytes) -> list[dict[str, Any]]:
    """TextSynth framing: JSON objects, each followed by a blank line."""
    assert raw.endswith(b"\n\n")
    return [json.loads(part) for part in raw[:-2].split(b"\n\n")]


# --- discovery


def test_health_answers_without_generating(client: httpx.Client, real_node: RunningNode) -> None:
    answer = client.get(f"{real_node.url}/health")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "engines": ["smollm2"],
        "slots": REAL_NODE_SLOTS,
        "busy": 0,
        "queue": 0,
    }


def test_engine_list_names_each_engine(client: httpx.Client, real_node: RunningNode) -> None:
    engines = client.get(f"{real_node.url}/v1/engines").json()["engines"]
    assert [(e["id"], e["n_ctx"], e["n_vocab"], e["slots"]) for e in engines] == [
        ("smollm2", 512, 49152, REAL_NODE_SLOTS)
    ]


# --- completions and chat


def test_completion_has_the_textsynth_fields(client: httpx.Client, real_node: RunningNode) -> None:
    prompt = "The capital of France is"
    answer = ok(client, real_node, "completions", {"prompt": prompt, "max_tokens": 6})
    assert set(answer) == {
        "text",
        "reached_end",
        "truncated_prompt",
        "input_tokens",
        "output_tokens",
        "finish_reason",
    }
    assert isinstance(answer["text"], str)
    assert answer["reached_end"] is True
    assert answer["truncated_prompt"] is False
    tokens = ok(client, real_node, "tokenize", {"text": prompt})["tokens"]
    assert answer["input_tokens"] == len(tokens)
    assert 1 <= answer["output_tokens"] <= 6
    assert answer["finish_reason"] in ("stop", "length")
    assert answer["finish_reason"] == "length" or answer["output_tokens"] < 6


def test_chat_applies_the_template_and_a_system_prompt(
    client: httpx.Client, real_node: RunningNode
) -> None:
    plain = ok(client, real_node, "chat", {"messages": ["Say hi."], "max_tokens": 8, "seed": 3})
    told = ok(
        client,
        real_node,
        "chat",
        {"messages": ["Say hi."], "system": "Be terse.", "max_tokens": 8, "seed": 3},
    )
    turns = ok(
        client,
        real_node,
        "chat",
        {"messages": ["Say hi.", "Hi!", "Again."], "max_tokens": 8, "seed": 3},
    )
    assert isinstance(plain["text"], str) and plain["text"]
    # The template's default system prompt is longer than "Be terse.", and more turns add up.
    assert told["input_tokens"] < plain["input_tokens"] < turns["input_tokens"]


def test_same_request_and_seed_give_the_same_text_whatever_ran_between(
    client: httpx.Client, real_node: RunningNode
) -> None:
    body = {"messages": ["Write a title for a film about a cat."], "max_tokens": 24, "seed": 77}
    first = ok(client, real_node, "chat", body)
    # A request sharing the prompt's beginning leaves a different cache behind.
    ok(client, real_node, "chat", body | {"messages": ["Write a title for a song."], "seed": 0})
    second = ok(client, real_node, "chat", body)
    assert second["text"] == first["text"]
    other_seed = [ok(client, real_node, "chat", body | {"seed": s})["text"] for s in (78, 79)]
    assert any(text != first["text"] for text in other_seed)


def test_a_seeded_answer_does_not_depend_on_which_slot_served_it_or_its_cache(
    client: httpx.Client, real_node: RunningNode
) -> None:
    """Streamed answers end while their slot is still being released, so the next request
    often lands in another slot, whose cache holds another prompt's beginning: a reused
    prefix is computed in other batch shapes and used to move the text now and then."""
    body = {
        "messages": ["Describe the film Heat as JSON."],
        "system": "You are a film database.",
        "max_tokens": 80,
        "temperature": 0.7,
        "top_k": 40,
        "seed": 5,
    }
    other = body | {"messages": ["Describe the film Alien as JSON."], "seed": 6}
    texts = []
    for _ in range(4):
        texts.append(streamed_text(client, real_node, body))
        streamed_text(client, real_node, other)
    assert len(set(texts)) == 1, texts


def streamed_text(client: httpx.Client, node: RunningNode, body: dict[str, Any]) -> str:
    return "".join(
        f.get("text", "") for f in parse_frames(stream_frames(client, node, "chat", body))
    )


def test_n_completions_come_back_as_a_list(client: httpx.Client, real_node: RunningNode) -> None:
    answer = ok(client, real_node, "completions", {"prompt": "Once upon", "max_tokens": 4, "n": 3})
    assert isinstance(answer["text"], list) and len(answer["text"]) == 3
    assert all(isinstance(text, str) for text in answer["text"])
    assert 3 <= answer["output_tokens"] <= 12


def test_a_long_prompt_loses_its_beginning(client: httpx.Client, real_node: RunningNode) -> None:
    long_prompt = "one two three four " * 150  # about 600 tokens, the context is 512
    # A large max_tokens leaves little room for the prompt (cheap to evaluate), and the
    # grammar ends the generation at once.
    body = {"prompt": long_prompt, "max_tokens": 500, "grammar": 'root ::= " five"'}
    answer = ok(client, real_node, "completions", body)
    assert answer["truncated_prompt"] is True
    assert answer["input_tokens"] == 512 - 500
    assert answer["text"] == " five"
    short = ok(client, real_node, "completions", body | {"prompt": "one two"})
    assert short["truncated_prompt"] is False


def test_logit_bias_can_force_a_token(client: httpx.Client, real_node: RunningNode) -> None:
    (token,) = ok(client, real_node, "tokenize", {"text": " banana"})["tokens"]
    answer = ok(
        client,
        real_node,
        "completions",
        {"prompt": "My favourite", "max_tokens": 3, "logit_bias": {str(token): 100}},
    )
    assert answer["text"] == " banana" * 3


# --- constrained decoding and stop strings


MOVIE_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "genres": {
            "type": "array",
            "items": {"type": "string", "maxLength": 15},
            "maxItems": 3,
        },
    },
    "required": ["title", "year", "genres"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2])
def test_schema_constrained_output_parses_and_validates(
    client: httpx.Client, real_node: RunningNode, seed: int
) -> None:
    answer = ok(
        client,
        real_node,
        "chat",
        {
            "messages": ["Describe a film as JSON."],
            "max_tokens": 120,
            "seed": seed,
            "schema": MOVIE_SCHEMA,
        },
    )
    assert answer["finish_reason"] == "stop"
    jsonschema.validate(json.loads(answer["text"]), MOVIE_SCHEMA)


def test_a_gbnf_grammar_constrains_output(client: httpx.Client, real_node: RunningNode) -> None:
    body = {"messages": ["Is water wet?"], "max_tokens": 5, "grammar": 'root ::= "yes" | "no"'}
    assert ok(client, real_node, "chat", body)["text"] in ("yes", "no")


FORCED = {"prompt": "Greek letters:", "max_tokens": 20, "grammar": 'root ::= " alpha, beta, gamma"'}


def test_a_stop_string_ends_the_text_and_is_not_included(
    client: httpx.Client, real_node: RunningNode
) -> None:
    plain = ok(client, real_node, "completions", FORCED)
    assert plain["text"] == " alpha, beta, gamma"
    stopped = ok(client, real_node, "completions", FORCED | {"stop": [", g", "zzz"]})
    assert (stopped["text"], stopped["finish_reason"]) == (" alpha, beta", "stop")
    frames = parse_frames(stream_frames(client, real_node, "completions", FORCED | {"stop": ", g"}))
    pieces = [frame["text"] for frame in frames]
    assert "".join(pieces) == " alpha, beta"
    assert not any(", g" in piece or piece.endswith(",") for piece in pieces[-3:])


# --- streaming


def test_stream_is_blank_line_separated_json_ending_with_reached_end(
    client: httpx.Client, real_node: RunningNode
) -> None:
    body = {"messages": ["Tell me about the sea."], "max_tokens": 16, "seed": 5}
    frames = parse_frames(stream_frames(client, real_node, "chat", body))
    *pieces, last = frames
    assert len(pieces) >= 2
    assert all(set(p) == {"text", "reached_end"} and p["reached_end"] is False for p in pieces)
    assert last["reached_end"] is True
    assert last["output_tokens"] == 16 and last["finish_reason"] == "length"
    whole = ok(client, real_node, "chat", body)
    assert "".join(p["text"] for p in pieces) == whole["text"]
    assert last["input_tokens"] == whole["input_tokens"]


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\r"])
def test_a_prompt_holding_a_unicode_line_separator_streams_to_its_end(
    client: httpx.Client, real_node: RunningNode, separator: str
) -> None:
    # llama.cpp echoes the prompt in its last event, where JSON leaves these unescaped.
    body = {"prompt": f"One{separator}two", "max_tokens": 4, "seed": 3}
    frames = parse_frames(stream_frames(client, real_node, "completions", body))
    assert frames[-1]["reached_end"] is True
    assert frames[-1]["output_tokens"] == 4


def test_stream_sends_tokens_as_they_are_generated(
    client: httpx.Client, real_node: RunningNode
) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 40, "stream": True, "seed": 9}
    arrivals = []
    with client.stream("POST", real_node.endpoint("completions"), json=body) as answer:
        for _ in answer.iter_raw():
            arrivals.append(time.monotonic())
    assert len(arrivals) >= 10  # not one buffered body
    assert arrivals[-1] - arrivals[0] > 0.05


def test_a_client_leaving_mid_stream_frees_the_model(
    client: httpx.Client, real_node: RunningNode
) -> None:
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 400, "stream": True}
    with client.stream("POST", real_node.endpoint("completions"), json=body) as answer:
        next(answer.iter_raw())  # the model is now generating for us; leave
    started = time.monotonic()
    ok(client, real_node, "completions", {"prompt": "Hi", "max_tokens": 2})
    assert time.monotonic() - started < 3  # 400 tokens would take several seconds
    assert client.get(f"{real_node.url}/health").json()["busy"] == 0


# --- tokenize and logprob


def test_tokenize_with_token_content(client: httpx.Client, real_node: RunningNode) -> None:
    text = "Hello world, ça va?"
    answer = ok(client, real_node, "tokenize", {"text": text, "token_content_type": "base64"})
    assert all(isinstance(t, int) for t in answer["tokens"])
    assert len(answer["token_content"]) == len(answer["tokens"])
    assert b"".join(base64.b64decode(c) for c in answer["token_content"]) == text.encode()
    assert set(ok(client, real_node, "tokenize", {"text": text})) == {"tokens"}


LOGPROB_FIXTURES = json.loads(
    (REPO / "tests/node/fixtures/logprob.json").read_text(encoding="utf-8")
)["cases"]


@pytest.mark.parametrize(
    "case", LOGPROB_FIXTURES, ids=[c["continuation"].strip()[:16] for c in LOGPROB_FIXTURES]
)
def test_logprob_matches_the_values_recorded_with_the_previous_node(
    client: httpx.Client, real_node: RunningNode, case: dict[str, Any]
) -> None:
    """Recorded with the llama-cpp-python node before it was replaced: the same model
    must give the same log-probabilities (an empty context, partial UTF-8 tokens...)."""
    body = {"context": case["context"], "continuation": case["continuation"]}
    answer = ok(client, real_node, "logprob", body)
    assert answer["num_tokens"] == case["num_tokens"]
    assert answer["input_tokens"] == case["input_tokens"]
    assert answer["is_greedy"] == case["is_greedy"]
    per_token = abs(answer["logprob"] - case["logprob"]) / case["num_tokens"]
    assert per_token < 1e-3


def test_logprob_is_greedy_for_what_greedy_decoding_writes(
    client: httpx.Client, real_node: RunningNode
) -> None:
    context = "The capital of France is"
    written = ok(
        client,
        real_node,
        "completions",
        {"prompt": context, "max_tokens": 3, "temperature": 0},
    )["text"]
    likely = ok(client, real_node, "logprob", {"context": context, "continuation": written})
    unlikely = ok(client, real_node, "logprob", {"context": context, "continuation": " zebra"})
    assert likely["is_greedy"] is True
    assert unlikely["is_greedy"] is False
    assert unlikely["logprob"] < likely["logprob"] <= 0


# --- errors: each a 4xx with a one-line JSON error, and the node keeps serving

E = "/v1/engines/smollm2"

BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/v1/engines/nope/completions", {"prompt": "x"}, 404, "engine: no engine named"),
    ("POST", f"{E}/translate", {"text": "x"}, 404, "POST /v1/engines/smollm2/translate"),
    ("GET", f"{E}/completions", None, 405, "GET /v1/engines/smollm2/completions"),
    ("GET", "/", None, 404, "GET /: Not Found"),
    ("POST", f"{E}/completions", b"{not json", 400, "request body: not valid JSON"),
    ("POST", f"{E}/completions", b"[1]", 400, "request body: expected a JSON object"),
    ("POST", f"{E}/completions", {}, 400, "prompt: missing"),
    ("POST", f"{E}/completions", b'{"prompt": "\\ud800"}', 400, "prompt: not valid Unicode"),
    ("POST", f"{E}/completions", {"prompt": 1}, 400, "prompt: expected a string"),
    ("POST", f"{E}/completions", {"prompt": "x", "top_p": 2}, 400, "top_p: expected a number"),
    ("POST", f"{E}/completions", {"prompt": "x", "max_tokens": 512}, 400, "max_tokens: "),
    ("POST", f"{E}/completions", {"prompt": "x", "temprature": 1}, 400, "temprature: unknown"),
    ("POST", f"{E}/chat", {"messages": ["a", "b"]}, 400, "messages: expected an odd number"),
    (
        "POST",
        f"{E}/chat",
        {"messages": ["a"], "schema": {"type": "nonsense"}},
        400,
        "schema: not a valid JSON Schema",
    ),
    (
        "POST",
        f"{E}/chat",
        {"messages": ["a"], "schema": {"type": "object", "properties": {"a": {"$ref": "#/x"}}}},
        400,
        "schema: $ref '#/x' does not resolve",
    ),
    (
        "POST",
        f"{E}/chat",
        {"messages": ["a"], "grammar": "root ::= undefined_rule"},
        400,
        "grammar: llama.cpp refused it",
    ),
    ("POST", f"{E}/tokenize", {"text": "a", "token_content_type": "hex"}, 400, "token_content"),
    ("POST", f"{E}/logprob", {"context": "a", "continuation": ""}, 400, "continuation: must"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "start"), BAD_REQUESTS)
def test_a_bad_request_gets_a_json_error_and_the_node_keeps_serving(
    client: httpx.Client,
    real_node: RunningNode,
    method: str,
    path: str,
    body: Any,
    status: int,
    start: str,
) -> None:
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    answer = client.request(method, real_node.url + path, content=content)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error.startswith(start)
    assert "\n" not in error
    assert ok(client, real_node, "completions", {"prompt": "Hi", "max_tokens": 1})["reached_end"]


def test_a_body_over_the_limit_is_a_413(client: httpx.Client, real_node: RunningNode) -> None:
    big = {"prompt": "x" * (1 << 20)}
    answer = post(client, real_node, "completions", big)
    assert answer.status_code == 413
    assert answer.json()["error"].startswith("request body: ")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"prompt": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    answer = client.post(real_node.endpoint("completions"), content=chunked())
    assert answer.status_code == 413
    assert ok(client, real_node, "completions", {"prompt": "Hi", "max_tokens": 1})["reached_end"]


def test_the_node_log_records_requests(client: httpx.Client, real_node: RunningNode) -> None:
    ok(client, real_node, "completions", {"prompt": "Hi", "max_tokens": 3})
    log = real_node.log_path.read_text()
    assert "listening on http://127.0.0.1:" in log
    assert "smollm2 completions: 1 prompt tokens, " in log
