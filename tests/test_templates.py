from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner._errors import ConfigError
from runner._templates import PromptTemplate, load_template, render_string

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def write(tmp_path: Path, text: str, name: str = "t.j2") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        ("Hello {{ name }}", {"name"}),
        ("{{ a }} {{ b | upper }} {{ a }}", {"a", "b"}),
        ("{{ item.title }} {{ item['year'] }}", {"item"}),
        ("{% for x in xs %}{{ x }}{{ loop.index }}{% endfor %}", {"xs"}),
        ("{% set y = 1 %}{{ y }}", set()),
        ("{% for i in range(3) %}{{ i }}{% endfor %}", set()),
        ("no variables at all", set()),
    ],
)
def test_variables_are_the_top_level_names_read(source: str, variables: set[str]) -> None:
    assert PromptTemplate.from_string(source, name="t").variables == variables


@pytest.mark.parametrize(
    ("source", "variables", "expected"),
    [
        ("Hello {{ name }}", {"name": "Ann"}, "Hello Ann"),
        ("<b>{{ x }}</b>", {"x": "a & <c>"}, "<b>a & <c></b>"),  # no autoescape
        ("line\n", {}, "line"),  # keep_trailing_newline is off
        ("{% if x %}\nyes\n{% endif %}\nend", {"x": True}, "yes\nend"),  # trim_blocks
        ("{% if opt is defined %}{{ opt }}{% endif %}.", {}, "."),  # optional name guarded
        ("{{ n + 1 }}", {"n": 41}, "42"),
    ],
)
def test_render_fills_in_values(source: str, variables: dict[str, Any], expected: str) -> None:
    assert PromptTemplate.from_string(source, name="t").render(variables) == expected


def test_missing_variables_are_all_named_with_the_item() -> None:
    template = PromptTemplate.from_string(
        "{{ year }}: {{ title }} by {{ director }}", name="prompts/movie_details.j2"
    )
    with pytest.raises(ConfigError) as caught:
        template.render({"director": "X"}, item_label="abc123")
    assert str(caught.value) == (
        "prompts/movie_details.j2: item 'abc123' has no variable(s) 'year', 'title'"
    )


def test_missing_variable_without_item_label_names_the_template() -> None:
    with pytest.raises(ConfigError, match=r"^t has no variable\(s\) 'x'$"):
        PromptTemplate.from_string("{{ x }}", name="t").render({})


def test_missing_attribute_of_a_present_variable_is_a_config_error() -> None:
    template = PromptTemplate.from_string("{{ item.title }}", name="t")
    with pytest.raises(ConfigError, match=r"^t: item 'i1': .*title"):
        template.render({"item": {}}, item_label="i1")


def test_a_failing_expression_is_a_config_error() -> None:
    template = PromptTemplate.from_string("{{ a + b }}", name="t")
    with pytest.raises(ConfigError, match=r"^t: item 'i': template error: "):
        template.render({"a": "x", "b": 1}, item_label="i")


def test_check_variables_passes_when_all_are_available() -> None:
    PromptTemplate.from_string("{{ a }}{{ b }}", name="t").check_variables({"a", "b", "c"})


def test_check_variables_names_every_missing_name_and_what_is_available() -> None:
    template = PromptTemplate.from_string("{{ b }}{{ a }}{{ c }}", name="p.j2")
    with pytest.raises(ConfigError) as caught:
        template.check_variables({"c", "text"})
    message = str(caught.value)
    assert message == (
        "p.j2: uses variable(s) 'b', 'a' that the input does not provide (available: 'c', 'text')"
    )


def test_load_template_reads_a_file(tmp_path: Path) -> None:
    template = load_template(write(tmp_path, "Hi {{ who }}\n"))
    assert template.name == str(tmp_path / "t.j2")
    assert template.render({"who": "you"}) == "Hi you"


def test_missing_template_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts" / "x.j2"
    with pytest.raises(ConfigError) as caught:
        load_template(path)
    assert str(caught.value) == f"{path}: template file not found"


def test_label_names_what_the_file_is(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": system prompt file not found$"):
        load_template(tmp_path / "s.j2", label="system prompt")


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "first line\nsecond {% endfor %}\nthird")
    with pytest.raises(ConfigError) as caught:
        load_template(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: template syntax error: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"caf\xe9 {{ x }}"), "is not UTF-8"),
    ],
    ids=["directory", "latin-1"],
)
def test_unreadable_template_file_is_a_config_error(
    tmp_path: Path, make: Any, expected: str
) -> None:
    path = tmp_path / "t.j2"
    make(path)
    with pytest.raises(ConfigError, match=expected):
        load_template(path)


def test_render_string_renders_inline_text() -> None:
    assert render_string("You are {{ role }}.", {"role": "a film database"}) == (
        "You are a film database."
    )


def test_render_string_names_its_missing_variables() -> None:
    with pytest.raises(ConfigError, match=r"^job.system: item '7' has no variable\(s\) 'lang'$"):
        render_string("Answer in {{ lang }}", {}, name="job.system", item_label="7")


def test_render_string_syntax_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^inline template:1: template syntax error"):
        render_string("{% if %}", {})


@pytest.mark.parametrize("name", ["movie_details.j2", "movie_synopsis.j2"])
def test_the_shipped_prompts_use_only_title(name: str) -> None:
    template = load_template(PROMPTS / name)
    assert template.variables == {"title"}
    assert "Forrest Gump" in template.render({"title": "Forrest Gump"})
