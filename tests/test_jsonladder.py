from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner._errors import AnswerError, ConfigError
from runner._jsonladder import REASON_LIMIT, STEPS, accept_json, compile_schema, load_schema

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
MOVIE_SCHEMA = compile_schema(
    load_schema(PROMPTS / "movie_details.schema.json"), source="movie_details.schema.json"
)
MOVIE = {
    "title": "Heat",
    "release_year": 1995,
    "director": "Michael Mann",
    "genre": "Crime",
    "main_actors": ["Al Pacino", "Robert De Niro"],
}
MOVIE_JSON = json.dumps(MOVIE)
POINT = compile_schema(
    {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"],
    },
    source="point",
)


# ------------------------------------------------------------------ the ladder


@pytest.mark.parametrize(
    ("text", "value", "step"),
    [
        (MOVIE_JSON, MOVIE, "strict"),
        (f"\n  {MOVIE_JSON}  \n", MOVIE, "strict"),
        (f"```json\n{MOVIE_JSON}\n```", MOVIE, "extracted"),
        (f"Here you go:\n```\n{MOVIE_JSON}\n```\nEnjoy!", MOVIE, "extracted"),
        (f"Sure! The details are {MOVIE_JSON} as requested.", MOVIE, "extracted"),
        (f"{MOVIE_JSON}\nI hope this helps.", MOVIE, "extracted"),
        (MOVIE_JSON.replace('"Crime"', "'Crime'"), MOVIE, "repaired"),
        (MOVIE_JSON[:-1] + ",}", MOVIE, "repaired"),
        (MOVIE_JSON[:-1], MOVIE, "repaired"),  # cut off before the closing brace
        (f"```json\n{MOVIE_JSON[:-1]}", MOVIE, "repaired"),  # cut off inside its fence
    ],
    ids=[
        "bare",
        "whitespace",
        "json-fence",
        "plain-fence-in-prose",
        "inline-in-prose",
        "followed-by-prose",
        "single-quotes",
        "trailing-comma",
        "truncated",
        "truncated-in-fence",
    ],
)
def test_movie_answer_is_accepted_at_the_expected_step(text: str, value: Any, step: str) -> None:
    answer = accept_json(text, MOVIE_SCHEMA)
    assert (answer.value, answer.step) == (value, step)


def test_answer_wrapped_in_prose_is_extracted() -> None:
    answer = accept_json('The point is {"x": 1, "y": 2}, I think.', POINT)
    assert (answer.value, answer.step) == ({"x": 1, "y": 2}, "extracted")


def test_braces_inside_strings_do_not_end_the_object() -> None:
    text = 'Answer: {"note": "a } and a { inside", "x": 1, "y": 2} done'
    answer = accept_json(text, POINT)
    assert answer.value == {"note": "a } and a { inside", "x": 1, "y": 2}


def test_the_first_candidate_that_validates_wins() -> None:
    text = 'For example {"x": "one"} would be wrong; the answer is {"x": 1, "y": 2}.'
    assert accept_json(text, POINT).value == {"x": 1, "y": 2}


def test_prose_quotes_and_apostrophes_around_the_object_are_harmless() -> None:
    text = 'It\'s "the" point: {"x": 3, "y": 4} (don\'t "quote" me)'
    assert accept_json(text, POINT).value == {"x": 3, "y": 4}


def test_an_array_answer_is_extracted_without_a_schema() -> None:
    assert accept_json("The list: [1, 2, 3].", None).value == [1, 2, 3]


@pytest.mark.parametrize("text", ["0", "null", '"text"', "true", "[]", "{}"])
def test_any_json_value_is_strict_without_a_schema(text: str) -> None:
    answer = accept_json(text, None)
    assert (answer.value, answer.step) == (json.loads(text), "strict")


@pytest.mark.parametrize(
    "text",
    ["I don't know that film.", "", "   ", "Sorry. { nothing here", "yes"],
)
def test_prose_is_never_repaired_into_an_empty_answer(text: str) -> None:
    with pytest.raises(AnswerError, match=r"^answer holds no valid JSON") as caught:
        accept_json(text, None)
    assert len(caught.value.reasons) == 3


def test_prose_is_not_accepted_as_an_empty_object_for_an_object_schema() -> None:
    with pytest.raises(AnswerError):
        accept_json("Sorry, I can't help with that {", POINT)


def test_an_empty_repair_is_accepted_only_if_the_schema_allows_it() -> None:
    anything = compile_schema({"type": "object"}, source="s")
    assert accept_json("oops {", anything).value == {}


def test_schema_failure_lists_a_reason_per_step_with_the_path() -> None:
    text = MOVIE_JSON.replace("1995", '"1995"')
    with pytest.raises(AnswerError, match=r"^answer does not match the schema") as caught:
        accept_json(text, MOVIE_SCHEMA)
    reasons = caught.value.reasons
    assert [r.split(":")[0] for r in reasons] == list(STEPS)
    assert reasons[0] == "strict: schema: $.release_year: '1995' is not of type 'integer'"


def test_parse_failure_reasons_say_what_failed() -> None:
    with pytest.raises(AnswerError) as caught:
        accept_json("no json here", POINT)
    assert caught.value.reasons[0].startswith("strict: not JSON: Expecting value")
    assert caught.value.reasons[1] == "extracted: no fenced block or {...} / [...] found"


def test_reasons_are_one_line_and_clipped() -> None:
    schema = compile_schema({"type": "string", "maxLength": 1}, source="s")
    with pytest.raises(AnswerError) as caught:
        accept_json(json.dumps("x\n" * 500), schema)
    for reason in caught.value.reasons:
        assert len(reason) <= len("repaired: ") + REASON_LIMIT
        assert "\n" not in reason


def test_deeply_nested_text_does_not_crash() -> None:
    with pytest.raises(AnswerError):
        accept_json("[" * 50_000, POINT)


# ------------------------------------------------------------------ properties

SCHEMAS = [
    None,
    POINT,
    MOVIE_SCHEMA,
    compile_schema({"type": "array", "items": {"type": "integer"}}, source="ints"),
    compile_schema({"type": "string", "minLength": 1}, source="str"),
]
JSON_ALPHABET = st.sampled_from(list("{}[]\":,\\ \n'`abcxy0123456789.-eEtrufalsn"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=10,
)
texts = st.one_of(
    st.text(max_size=200),
    st.text(JSON_ALPHABET, max_size=200),
    st.tuples(st.text(max_size=30), json_values, st.text(max_size=30)).map(
        lambda t: t[0] + json.dumps(t[1]) + t[2]
    ),
    st.tuples(json_values, st.integers(0, 60)).map(lambda t: json.dumps(t[0])[: t[1]]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, schema_index=st.integers(0, len(SCHEMAS) - 1))
def test_ladder_never_crashes_and_never_returns_an_invalid_value(
    text: str, schema_index: int
) -> None:
    validator = SCHEMAS[schema_index]
    try:
        answer = accept_json(text, validator)
    except AnswerError as exc:
        reasons = exc.reasons
    else:
        assert answer.step in STEPS
        assert validator is None or validator.is_valid(answer.value)
        return
    assert [r.split(":")[0] for r in reasons] == list(STEPS)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_any_json_value_is_accepted_strictly(value: Any) -> None:
    answer = accept_json(json.dumps(value), None)
    assert (answer.value, answer.step) == (value, "strict")


# ------------------------------------------------------------------ schemas


def test_draft_2020_12_is_the_default() -> None:
    validator = compile_schema({"prefixItems": [{"type": "integer"}]}, source="s")
    assert type(validator).__name__ == "Draft202012Validator"
    assert not validator.is_valid(["x"])


def test_schema_may_name_an_older_draft() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "integer"}
    assert type(compile_schema(schema, source="s")).__name__ == "Draft7Validator"


def test_formats_are_asserted() -> None:
    validator = compile_schema({"type": "string", "format": "date"}, source="s")
    assert validator.is_valid("2024-02-29")
    assert not validator.is_valid("tomorrow")


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integr"}, r"^job.schema: invalid JSON Schema at \$.type: 'integr' is not valid"),
        ({"minLength": -1}, r"^job.schema: invalid JSON Schema at \$.minLength: -1 is less than"),
        ({"$schema": "https://example.org/mine"}, r"^job.schema: unknown \$schema 'https://"),
        ([], r"^job.schema: a JSON Schema must be an object, got list$"),
    ],
)
def test_invalid_schema_names_the_source_and_the_problem(schema: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_schema(schema, source="job.schema")


def test_load_schema_reads_the_shipped_schema() -> None:
    assert load_schema(PROMPTS / "movie_details.schema.json")["type"] == "object"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"s.json: schema file not found$"),
        ('{"type": "object",\n}', r"s.json:2: schema is not valid JSON: "),
        ("[1]", r"s.json: a JSON Schema must be an object, got list$"),
        (b"\xff", r"s.json: schema file is not UTF-8"),
    ],
)
def test_load_schema_errors_are_one_line_config_errors(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "s.json"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_schema(path)
