"""Request validation: defaults, conversions, and a table of refusals naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from runner.node._api import (
    ApiError,
    Limits,
    Sampling,
    parse_chat,
    parse_completion,
    parse_json,
    parse_logprob,
    parse_tokenize,
)

LIMITS = Limits(n_ctx=2048, n_vocab=1000)


def test_completion_defaults_follow_the_textsynth_api() -> None:
    request = parse_completion({"prompt": "Hi"}, LIMITS)
    assert request.prompt == "Hi"
    assert request.sampling == Sampling()
    s = request.sampling
    assert (s.max_tokens, s.temperature, s.top_k, s.top_p) == (100, 1.0, 40, 0.9)
    assert (s.seed, s.stop, s.n, s.stream) == (0, (), 1, False)
    assert (s.repetition_penalty, s.typical_p, s.schema, s.grammar) == (1.0, 1.0, None, None)


def test_completion_fields_are_converted() -> None:
    body = {
        "prompt": "",
        "max_tokens": 5,
        "temperature": 0,
        "top_k": 1000,
        "top_p": 1,
        "seed": 42,
        "stop": "\n",
        "n": 16,
        "presence_penalty": -2,
        "frequency_penalty": 2.0,
        "repetition_penalty": 1.1,
        "typical_p": 0.5,
        "logit_bias": {"7": -100, "999": 100},
        "schema": {"type": "object"},
    }
    s = parse_completion(body, LIMITS).sampling
    assert (s.max_tokens, s.temperature, s.top_k, s.top_p, s.seed) == (5, 0.0, 1000, 1.0, 42)
    assert (s.stop, s.n, s.presence_penalty, s.frequency_penalty) == (("\n",), 16, -2.0, 2.0)
    assert s.logit_bias == {7: -100.0, 999: 100.0}
    assert s.schema == {"type": "object"}


def test_null_means_default() -> None:
    assert parse_completion({"prompt": "x", "seed": None, "stop": None}, LIMITS).sampling == (
        Sampling()
    )


def test_stop_list_and_stream() -> None:
    s = parse_completion({"prompt": "x", "stop": ["a", "bc"], "stream": True}, LIMITS).sampling
    assert (s.stop, s.stream) == (("a", "bc"), True)


BAD_COMPLETIONS: list[tuple[dict[str, Any], str]] = [
    ({}, "prompt: missing"),
    ({"prompt": 3}, "prompt: expected a string, got an integer"),
    ({"prompt": ["a", "b"]}, "prompt: expected a string, got a list"),
    (
        {"prompt": "a\ud800"},
        "prompt: not valid Unicode (a lone surrogate escape such as \\ud800)",
    ),
    (
        {"prompt": "x", "stop": ["\udfff"]},
        "stop: not valid Unicode (a lone surrogate escape such as \\ud800)",
    ),
    ({"prompt": "x", "max_token": 5}, "max_token: unknown field"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens: expected an integer in 1..2047, got 0"),
    ({"prompt": "x", "max_tokens": 2048}, "max_tokens: expected an integer in 1..2047, got 2048"),
    ({"prompt": "x", "max_tokens": "5"}, "max_tokens: expected an integer, got a string"),
    ({"prompt": "x", "max_tokens": 5.0}, "max_tokens: expected an integer, got a number"),
    ({"prompt": "x", "max_tokens": True}, "max_tokens: expected an integer, got a boolean"),
    ({"prompt": "x", "temperature": -0.1}, "temperature: expected a number in [0, 100], got -0.1"),
    ({"prompt": "x", "temperature": "hot"}, "temperature: expected a number, got a string"),
    ({"prompt": "x", "top_k": 0}, "top_k: expected an integer in 1..1000, got 0"),
    ({"prompt": "x", "top_k": 1001}, "top_k: expected an integer in 1..1000, got 1001"),
    ({"prompt": "x", "top_p": 0}, "top_p: expected a number in (0, 1], got 0"),
    ({"prompt": "x", "top_p": 1.5}, "top_p: expected a number in (0, 1], got 1.5"),
    ({"prompt": "x", "seed": -1}, "seed: expected an integer in 0..2147483647, got -1"),
    ({"prompt": "x", "seed": 2**31}, "seed: expected an integer in 0..2147483647, got 2147483648"),
    ({"prompt": "x", "stop": 5}, "stop: expected a string or a list of strings"),
    ({"prompt": "x", "stop": ["a", 1]}, "stop: expected a string or a list of strings"),
    ({"prompt": "x", "stop": list("abcdef")}, "stop: at most 5 stop strings, got 6"),
    ({"prompt": "x", "stop": ""}, "stop: stop strings must not be empty"),
    ({"prompt": "x", "n": 0}, "n: expected an integer in 1..16, got 0"),
    ({"prompt": "x", "n": 17}, "n: expected an integer in 1..16, got 17"),
    ({"prompt": "x", "n": 2, "stream": True}, "n: must be 1 when stream is true"),
    ({"prompt": "x", "stream": "yes"}, "stream: expected true or false, got a string"),
    (
        {"prompt": "x", "presence_penalty": 2.5},
        "presence_penalty: expected a number in [-2, 2], got 2.5",
    ),
    (
        {"prompt": "x", "frequency_penalty": -3},
        "frequency_penalty: expected a number in [-2, 2], got -3",
    ),
    (
        {"prompt": "x", "repetition_penalty": 0},
        "repetition_penalty: expected a number in (0, 10], got 0",
    ),
    ({"prompt": "x", "typical_p": 0}, "typical_p: expected a number in (0, 1], got 0"),
    (
        {"prompt": "x", "logit_bias": [1]},
        "logit_bias: expected an object token id → bias, got a list",
    ),
    (
        {"prompt": "x", "logit_bias": {"abc": 1}},
        "logit_bias: key 'abc': expected a token id in 0..999",
    ),
    (
        {"prompt": "x", "logit_bias": {"١": 1}},
        "logit_bias: key '١': expected a token id in 0..999",
    ),
    (
        {"prompt": "x", "logit_bias": {"1000": 1}},
        "logit_bias: key '1000': expected a token id in 0..999",
    ),
    (
        {"prompt": "x", "logit_bias": {"5": 101}},
        "logit_bias: key '5': expected a number in [-100, 100], got 101",
    ),
    ({"prompt": "x", "schema": "{}"}, "schema: expected an object, got a string"),
    ({"prompt": "x", "grammar": 1}, "grammar: expected a string, got an integer"),
    ({"prompt": "x", "grammar": "  "}, "grammar: must not be empty"),
    (
        {"prompt": "x", "grammar": "root ::= x", "schema": {}},
        "schema: cannot be combined with grammar",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_COMPLETIONS)
def test_bad_completion_is_a_400_naming_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_completion(body, LIMITS)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_chat_turns_and_system() -> None:
    request = parse_chat({"messages": ["a", "b", "c"], "system": "be brief", "n": 2}, LIMITS)
    assert request.messages == ("a", "b", "c")
    assert request.system == "be brief"
    assert request.sampling.n == 2
    assert parse_chat({"messages": ["a"]}, LIMITS).system is None


BAD_CHATS: list[tuple[dict[str, Any], str]] = [
    ({}, "messages: missing"),
    ({"messages": []}, "messages: expected a non-empty list of strings"),
    ({"messages": "hi"}, "messages: expected a non-empty list of strings"),
    ({"messages": ["a", 2, "c"]}, "messages: item 1: expected a string, got an integer"),
    (
        {"messages": ["\ud800"]},
        "messages: item 0: not valid Unicode (a lone surrogate escape such as \\ud800)",
    ),
    (
        {"messages": ["a", "b"]},
        "messages: expected an odd number of turns (user, assistant, ..., user), got 2",
    ),
    ({"messages": ["a"], "system": 1}, "system: expected a string, got an integer"),
    ({"messages": ["a"], "prompt": "x"}, "prompt: unknown field"),
    ({"messages": ["a"], "top_k": 0}, "top_k: expected an integer in 1..1000, got 0"),
]


@pytest.mark.parametrize(("body", "message"), BAD_CHATS)
def test_bad_chat_is_a_400_naming_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat(body, LIMITS)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_tokenize_and_logprob_requests() -> None:
    assert parse_tokenize({"text": "hi"}).base64 is False
    assert parse_tokenize({"text": "hi", "token_content_type": "base64"}).base64 is True
    assert parse_tokenize({"text": "hi", "token_content_type": "none"}).base64 is False
    request = parse_logprob({"context": "", "continuation": " x"})
    assert (request.context, request.continuation) == ("", " x")


BAD_OTHERS: list[tuple[Any, dict[str, Any], str]] = [
    (parse_tokenize, {}, "text: missing"),
    (parse_tokenize, {"text": None}, "text: expected a string, got null"),
    (
        parse_tokenize,
        {"text": "a", "token_content_type": "hex"},
        "token_content_type: expected one of none, base64, got 'hex'",
    ),
    (parse_tokenize, {"text": "a", "tokens": 1}, "tokens: unknown field"),
    (parse_logprob, {"continuation": "x"}, "context: missing"),
    (parse_logprob, {"context": "x"}, "continuation: missing"),
    (parse_logprob, {"context": "x", "continuation": ""}, "continuation: must not be empty"),
    (
        parse_logprob,
        {"context": 1, "continuation": "x"},
        "context: expected a string, got an integer",
    ),
]


@pytest.mark.parametrize(("parse", "body", "message"), BAD_OTHERS)
def test_bad_tokenize_or_logprob_is_a_400(parse: Any, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(body)
    assert (caught.value.status, caught.value.message) == (400, message)


@pytest.mark.parametrize(
    ("raw", "start"),
    [
        (b"", "request body: not valid JSON: "),
        (b"{", "request body: not valid JSON: "),
        (b'{"a": NaN}', "request body: not valid JSON: NaN is not allowed"),
        (b"\xff\xfe", "request body: not valid JSON: "),
        (b"[1, 2]", "request body: expected a JSON object, got a list"),
        (b'"text"', "request body: expected a JSON object, got a string"),
    ],
)
def test_body_must_be_a_json_object(raw: bytes, start: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(raw)
    assert caught.value.status == 400
    assert caught.value.message.startswith(start)
    assert "\n" not in caught.value.message


def test_json_object_body_is_returned() -> None:
    assert parse_json(b'{"prompt": "hi"}') == {"prompt": "hi"}
