"""The consolidated output: streamed to disk, equal to what a dict or list in input order
would hold; no answer lost in silence (a list keeps every position, a mapping's keys are
checked before the run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner._config import OutputConfig, OutputShape
from runner._errors import ConfigError
from runner._inputs import read_items
from runner._journal import Journal
from runner._output import check_keys, consolidate, write_output

TITLES = [f"{t} {i}" for i, t in enumerate(["Alien", "Heat", "Ran", "Ikiru", "Élan"] * 3)][:13]

answers = st.one_of(
    st.text(max_size=20),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    st.lists(st.integers(), max_size=3),
)
records = st.lists(
    st.fixed_dictionaries(
        {
            "index": st.integers(0, 12),
            "status": st.sampled_from(["ok", "ok", "failed"]),
            "answer": answers,
        }
    ),
    max_size=30,
)


def _journal(path: Path, rows: list[dict[str, Any]]) -> None:
    with Journal(path) as journal:
        for row in rows:
            journal.append(
                {
                    "id": f"id{row['index']}",
                    "index": row["index"],
                    "status": row["status"],
                    "input": {"title": row.get("title", TITLES[row["index"]])},
                    "answer": row["answer"],
                }
            )


def _naive(rows: list[dict[str, Any]], shape: OutputShape, items: int) -> Any:
    """The reference: the latest accepted record per index, a dict in index order, or a list
    with one entry per item (``None`` where none was accepted)."""
    latest: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["status"] == "ok":
            latest[row["index"]] = row
    if shape is OutputShape.mapping:
        return {TITLES[i]: latest[i]["answer"] for i in sorted(latest)}
    return [latest[i]["answer"] if i in latest else None for i in range(items)]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=records, shape=st.sampled_from([OutputShape.list, OutputShape.mapping]))
def test_the_streamed_output_equals_a_dict_or_list_built_in_input_order(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, Any]],
    shape: OutputShape,
) -> None:
    tmp = tmp_path_factory.mktemp("out")
    _journal(tmp / "results.jsonl", rows)
    output = OutputConfig(filename="out.json", shape=shape, key_field="title")
    path = write_output(tmp, tmp / "results.jsonl", output, items=13)
    assert path is not None
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written == _naive(rows, shape, 13)
    if shape is OutputShape.mapping:  # key order too: input order
        assert list(written) == list(_naive(rows, shape, 13))
    assert consolidate(tmp / "results.jsonl", output, items=13)[0] == written


def test_a_list_keeps_every_input_position_failed_and_unfinished_items_are_null(
    tmp_path: Path,
) -> None:
    rows = [
        {"index": 3, "status": "ok", "answer": "d"},
        {"index": 0, "status": "ok", "answer": "a"},
        {"index": 1, "status": "failed", "answer": ""},
    ]  # index 2 failed before; 4 and 5 never finished (an interrupted run)
    _journal(tmp_path / "results.jsonl", rows)
    output = OutputConfig(filename="o.json", shape=OutputShape.list)
    path = write_output(tmp_path, tmp_path / "results.jsonl", output, items=6)
    assert path is not None
    assert json.loads(path.read_text(encoding="utf-8")) == ["a", None, None, "d", None, None]
    assert consolidate(tmp_path / "results.jsonl", output, items=6) == (
        ["a", None, None, "d", None, None],
        2,
    )


def _items(tmp_path: Path, text: str) -> tuple[Path, Any]:
    path = tmp_path / "films.csv"
    path.write_text(text, encoding="utf-8")
    return path, lambda: read_items(path, format="csv", id_field="id")


def test_a_key_field_that_is_not_a_column_is_refused_naming_the_columns(tmp_path: Path) -> None:
    path, items = _items(tmp_path, "id,title\n1,Heat\n2,Alien\n")
    output = OutputConfig("o.json", OutputShape.mapping, key_field="titel")
    with pytest.raises(ConfigError) as info:
        check_keys(items, output, path=path)
    assert str(info.value) == (
        f"{path}: job.output.key_field 'titel' is not a column of the input (columns: id, title)"
    )


def test_a_repeated_mapping_key_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path, items = _items(tmp_path, "id,title\n1,Heat\n2,Alien\n3,Heat\n")
    output = OutputConfig("o.json", OutputShape.mapping, key_field="title")
    with pytest.raises(
        ConfigError, match=r"films.csv:4: key 'Heat' .* repeats \(first seen on line 2\)"
    ):
        check_keys(items, output, path=path)


@pytest.mark.parametrize(
    "output",
    [
        OutputConfig("o.json", OutputShape.mapping, key_field="title"),
        OutputConfig("o.json", OutputShape.mapping),  # the ids are the keys
        OutputConfig("o.json", OutputShape.list, key_field="title"),  # no keys in a list
    ],
)
def test_unique_keys_ids_and_lists_pass_the_key_check(tmp_path: Path, output: OutputConfig) -> None:
    path, items = _items(tmp_path, "id,title\n1,Heat\n2,Alien\n3,heat\n")
    check_keys(items, output, path=path)


def test_the_file_is_indented_like_json_dump(tmp_path: Path) -> None:
    rows = [
        {"index": 1, "status": "ok", "title": "b", "answer": {"year": 1979, "cast": ["x"]}},
        {"index": 0, "status": "ok", "title": "a", "answer": "ünïcode"},
    ]
    _journal(tmp_path / "results.jsonl", rows)
    path = write_output(
        tmp_path, tmp_path / "results.jsonl", OutputConfig(filename="o.json"), items=2
    )
    assert path is not None
    expected = json.dumps(["ünïcode", {"year": 1979, "cast": ["x"]}], ensure_ascii=False, indent=2)
    assert path.read_text(encoding="utf-8") == expected + "\n"


def test_no_answers_make_a_list_of_nulls_or_an_empty_object(tmp_path: Path) -> None:
    _journal(
        tmp_path / "results.jsonl", [{"index": 0, "status": "failed", "title": "a", "answer": ""}]
    )
    for shape, empty in ((OutputShape.list, [None]), (OutputShape.mapping, {})):
        path = write_output(
            tmp_path, tmp_path / "results.jsonl", OutputConfig("o.json", shape), items=1
        )
        assert path is not None
        assert json.loads(path.read_text(encoding="utf-8")) == empty


def test_lines_this_runner_did_not_write_are_skipped(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    _journal(results, [{"index": 0, "status": "ok", "title": "a", "answer": "kept"}])
    with results.open("a", encoding="utf-8") as f:
        f.write("not json\n")
        f.write(json.dumps({"status": "ok", "answer": "no index"}) + "\n")
        f.write(json.dumps({"status": "ok", "index": "3", "answer": "text index"}) + "\n")
        f.write(json.dumps({"status": "ok", "index": -1, "answer": "negative"}) + "\n")
        f.write(json.dumps({"status": "ok", "index": 2**31 - 1, "answer": "huge"}) + "\n")
        f.write(json.dumps({"status": "ok", "index": 5, "answer": "beyond the job"}) + "\n")
    # Indices at or beyond the job's item count are not this run's: skipped, and nothing
    # is allocated for them.
    assert consolidate(results, OutputConfig(shape=OutputShape.list), items=5) == (
        ["kept", None, None, None, None],
        1,
    )


def test_a_missing_results_file_gives_an_empty_output(tmp_path: Path) -> None:
    assert consolidate(tmp_path / "none.jsonl", OutputConfig(shape=OutputShape.list)) == ([], 0)


def test_shape_none_writes_no_file(tmp_path: Path) -> None:
    _journal(
        tmp_path / "results.jsonl", [{"index": 0, "status": "ok", "title": "a", "answer": "x"}]
    )
    output = OutputConfig(filename="o.json", shape=OutputShape.none)
    assert write_output(tmp_path, tmp_path / "results.jsonl", output, items=10) is None
    assert not (tmp_path / "o.json").exists()
