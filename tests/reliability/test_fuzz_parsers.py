"""Property tests for what parses a node's answer: the JSON ladder and the TextSynth
response and stream parsers. They never crash, never accept an answer the schema rejects,
and always say how an answer was obtained.

Extends ``tests/test_jsonladder.py`` and ``tests/test_textsynth.py`` (fixed schemas, random
text, random splits of one stream) with random *schemas*, corrupted renderings of values,
the ``strict`` step's exactness, provenance through the acceptor into the record, random
answer objects, random streams with multi-byte text cut at any byte, and truncated streams.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runner import _records
from runner._acceptance import json_acceptor
from runner._errors import AnswerError, ProtocolError, ServerError
from runner._jsonladder import STEPS, accept_json, compile_schema
from runner._request import Api, Completion, GenerationRequest, Style
from runner._textsynth import StreamDecoder, parse
from runner._work import Work

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ random schemas

scalar_schemas = st.one_of(
    st.builds(lambda n: {"type": "string", "minLength": n}, st.integers(0, 3)),
    st.builds(lambda lo: {"type": "integer", "minimum": lo}, st.integers(-5, 5)),
    st.just({"type": "number"}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.integers(0, 3) | st.text(max_size=3), min_size=1, max_size=3, unique=True).map(
        lambda xs: {"enum": xs}
    ),
)


def _object_schema(props: dict[str, Any], required: list[str], closed: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": [k for k in required if k in props],
        "additionalProperties": not closed,
    }


schemas = st.recursive(
    scalar_schemas,
    lambda inner: st.one_of(
        st.builds(
            lambda items, n: {"type": "array", "items": items, "maxItems": n},
            inner,
            st.integers(0, 4),
        ),
        st.builds(
            _object_schema,
            st.dictionaries(st.sampled_from("abcde"), inner, max_size=4),
            st.lists(st.sampled_from("abcde"), max_size=3, unique=True),
            st.booleans(),
        ),
    ),
    max_leaves=6,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 10)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("abcde"), inner, max_size=4)
    ),
    max_leaves=8,
)


def valid_values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that satisfy a schema drawn from ``schemas``."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "string":
        return st.text(min_size=schema["minLength"], max_size=schema["minLength"] + 5)
    if kind == "integer":
        return st.integers(schema["minimum"], schema["minimum"] + 100)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(valid_values(schema["items"]), max_size=schema["maxItems"])
    props = schema["properties"]
    return st.fixed_dictionaries(
        {k: valid_values(props[k]) for k in schema["required"]},
        optional={k: valid_values(v) for k, v in props.items() if k not in schema["required"]},
    )


def renderings(value: Any) -> st.SearchStrategy[str]:
    """Ways a model might write ``value``: clean, in prose, fenced, cut off, sloppy."""
    text = json.dumps(value, ensure_ascii=False)
    prose = st.text(st.characters(exclude_characters="{}[]\"`'\\"), max_size=20)
    return st.one_of(
        st.just(text),
        st.builds(lambda a, b: f"{a}{text}{b}", prose, prose),
        st.builds(lambda a: f"{a}\n```json\n{text}\n```\n", prose),
        st.integers(0, len(text)).map(lambda n: text[:n]),  # cut off by max_tokens
        st.just(text.replace('"', "'")),  # single quotes
        st.just(text[:-1] + ",]" if text.endswith("]") else text[:-1] + ",}"),  # trailing comma
        st.text(max_size=40),
    )


@FUZZ
@given(data=st.data(), schema=schemas, value=json_values)
def test_the_ladder_accepts_only_valid_answers_and_strict_means_exactly_the_text(
    data: st.DataObject, schema: dict[str, Any], value: Any
) -> None:
    validator = compile_schema(schema, source="fuzz")
    text = data.draw(renderings(value), label="text")
    try:
        strict = json.loads(text.strip())
    except ValueError:
        strict_ok = False
    else:
        strict_ok = validator.is_valid(strict)
    try:
        answer = accept_json(text, validator)
    except AnswerError as exc:
        reasons = exc.reasons
        answer = None
    if answer is None:
        assert not strict_ok, "a valid bare answer was refused"
        assert [r.split(":")[0] for r in reasons] == list(STEPS)
        return
    assert answer.step in STEPS
    jsonschema.validate(answer.value, schema)  # never an answer the schema rejects
    if strict_ok:
        assert (answer.step, answer.value) == ("strict", strict)
    else:
        assert answer.step != "strict", "a repaired or extracted answer claimed to be strict"


@FUZZ
@given(data=st.data(), schema=schemas)
def test_a_valid_value_in_prose_comes_back_unchanged(
    data: st.DataObject, schema: dict[str, Any]
) -> None:
    value = data.draw(valid_values(schema), label="value")
    assume(isinstance(value, dict | list))  # scalars in prose are not extracted, by design
    prose = data.draw(st.text(st.characters(exclude_characters="{}[]\"`'\\"), max_size=20))
    text = f"{prose} {json.dumps(value)} {prose}".strip()
    answer = accept_json(text, compile_schema(schema, source="fuzz"))
    assert answer.value == value


@pytest.mark.parametrize(
    "text",
    ["{" * 16_000, "{ " * 8_000, "[{" * 8_000, '{"a": ' * 3_000, "```json\n" + "[" * 16_000],
    ids=["braces", "spaced-braces", "mixed", "keys", "fenced"],
)
def test_a_pathological_answer_is_refused_in_milliseconds_not_seconds(text: str) -> None:
    """A small model stuck repeating one token fills max_tokens with it. Before the depth
    limit, json_repair spent 3-6 s on 16 KB of braces, holding the engine's thread."""
    validator = compile_schema({"type": "object"}, source="fuzz")
    started = time.process_time()
    with contextlib.suppress(AnswerError):
        accept_json(text, validator)
    assert time.process_time() - started < 1.0


WORK = Work(
    "id0",
    0,
    {"title": "Heat"},
    GenerationRequest(api=Api.textsynth, style=Style.chat, engine="m", prompt="p"),
    "k",
)


@FUZZ
@given(data=st.data(), schema=schemas, value=json_values)
def test_every_accepted_record_says_which_rung_of_the_ladder_produced_it(
    data: st.DataObject, schema: dict[str, Any], value: Any
) -> None:
    accept = json_acceptor(schema, source="fuzz")
    completion = Completion(text=data.draw(renderings(value), label="text"))
    try:
        accepted = accept(completion)
    except AnswerError:
        return
    record = _records.ok(
        WORK,
        answer=accepted.answer,
        step=accepted.step,
        completion=completion,
        node="n",
        seed=1,
        latency=0.1,
        attempts=1,
        seeds=[1],
        errors=[],
        text=completion.text,
    )
    assert record["repair"] in STEPS and record["repair"] == accepted.step
    jsonschema.validate(record["answer"], schema)
    json.dumps(record)  # a record is always writable as one JSON line


# ------------------------------------------------------------------ TextSynth answers

field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.lists(st.text(max_size=5) | st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
answer_objects = st.dictionaries(
    st.sampled_from(
        [
            "text",
            "reached_end",
            "input_tokens",
            "output_tokens",
            "truncated_prompt",
            "finish_reason",
            "error",
            "extra",
        ]
    ),
    field_values,
    max_size=7,
)


@settings(max_examples=400, deadline=None)
@given(obj=answer_objects, status=st.sampled_from([200, 200, 200, 400, 429, 500, 503]))
def test_any_answer_object_is_a_completion_of_the_right_types_or_a_node_error(
    obj: dict[str, Any], status: int
) -> None:
    try:
        completion = parse(status, json.dumps(obj).encode(), node="n")
    except ServerError as exc:
        refused: ServerError | ProtocolError = exc
    except ProtocolError as exc:
        refused = exc
    else:
        refused = None  # type: ignore[assignment]
    if isinstance(refused, ServerError):
        assert status != 200 and refused.status == status
        return
    if isinstance(refused, ProtocolError):
        assert status == 200 and str(refused)
        return
    assert status == 200 and "error" not in obj
    assert isinstance(completion.text, str)
    assert all(isinstance(t, str) for t in completion.texts)
    for name in ("input_tokens", "output_tokens"):
        count = getattr(completion, name)
        assert count is None or (type(count) is int)
    assert type(completion.truncated_prompt) is bool
    assert completion.finish_reason is None or isinstance(completion.finish_reason, str)


def frames(fragments: list[str], final: dict[str, Any]) -> bytes:
    chunks = [{"text": f, "reached_end": False} for f in fragments]
    chunks.append({"text": "", "reached_end": True, **final})
    return b"".join(json.dumps(c, ensure_ascii=False).encode() + b"\n\n" for c in chunks)


fragments = st.lists(st.text(max_size=8), max_size=8)  # any unicode: multi-byte characters
finals = st.fixed_dictionaries(
    {"output_tokens": st.integers(0, 500)},
    optional={
        "input_tokens": st.integers(0, 500),
        "finish_reason": st.sampled_from(["stop", "length"]),
    },
)


def feed_in_pieces(data: bytes, cuts: list[int]) -> StreamDecoder:
    decoder = StreamDecoder(node="n")
    points = sorted({min(c, len(data)) for c in cuts})
    start = 0
    for point in points:
        decoder.feed(data[start:point])
        start = point
    decoder.feed(data[start:])
    return decoder


@settings(max_examples=300, deadline=None)
@given(parts=fragments, final=finals, cuts=st.lists(st.integers(0, 400), max_size=10))
def test_a_random_stream_cut_at_any_bytes_decodes_to_its_text(
    parts: list[str], final: dict[str, Any], cuts: list[int]
) -> None:
    data = frames(parts, final)
    completion = feed_in_pieces(data, cuts).finish()
    assert completion.text == "".join(parts)
    assert completion.output_tokens == final["output_tokens"]


@settings(max_examples=300, deadline=None)
@given(parts=fragments, final=finals, data=st.data())
def test_a_stream_cut_short_is_never_taken_for_a_whole_answer(
    parts: list[str], final: dict[str, Any], data: st.DataObject
) -> None:
    whole = frames(parts, final)
    last_object_end = len(whole) - 2  # the final chunk's JSON ends before its blank line
    cut = data.draw(st.integers(0, last_object_end - 1), label="cut")
    decoder = StreamDecoder(node="n")
    try:
        decoder.feed(whole[:cut])
        completion = decoder.finish()
    except ProtocolError:
        return
    raise AssertionError(f"a stream cut at byte {cut} of {len(whole)} decoded: {completion}")


@settings(max_examples=200, deadline=None)
@given(parts=fragments, final=finals, blanks=st.lists(st.integers(0, 3), max_size=10))
def test_extra_blank_lines_between_chunks_change_nothing(
    parts: list[str], final: dict[str, Any], blanks: list[int]
) -> None:
    chunks = frames(parts, final).split(b"\n\n")[:-1]
    padded = b"".join(
        c + b"\n\n" + b"\n\n" * (blanks[i] if i < len(blanks) else 0) for i, c in enumerate(chunks)
    )
    completion = feed_in_pieces(padded, []).finish()
    assert completion.text == "".join(parts)
