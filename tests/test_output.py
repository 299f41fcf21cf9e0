"""The consolidated output: streamed to disk, equal to what a dict or list in input order
would hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import _repeats
from runner._config import OutputConfig, OutputShape
from runner._journal import Journal
from runner._output import consolidate, write_output

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
            "title": st.sampled_from(["Alien", "Heat", "Ran", "Ikiru", "Élan"]),
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
                    "input": {"title": row["title"]},
                    "answer": row["answer"],
                }
            )


def _naive(rows: list[dict[str, Any]], shape: OutputShape) -> Any:
    """The reference: the latest accepted record per index, a dict or list in index order."""
    latest: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["status"] == "ok":
            latest[row["index"]] = row
    ordered = [latest[i] for i in sorted(latest)]
    if shape is OutputShape.mapping:
        return {r["title"]: r["answer"] for r in ordered}
    return [r["answer"] for r in ordered]


@pytest.mark.parametrize("filter_bits", [8, 2**24])  # 8: every key shares a bucket
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=records, shape=st.sampled_from([OutputShape.list, OutputShape.mapping]))
def test_the_streamed_output_equals_a_dict_or_list_built_in_input_order(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    filter_bits: int,
    rows: list[dict[str, Any]],
    shape: OutputShape,
) -> None:
    monkeypatch.setattr(_repeats, "FILTER_BITS", filter_bits)
    tmp = tmp_path_factory.mktemp("out")
    _journal(tmp / "results.jsonl", rows)
    output = OutputConfig(filename="out.json", shape=shape, key_field="title")
    path = write_output(tmp, tmp / "results.jsonl", output, items=13)
    assert path is not None
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written == _naive(rows, shape)
    if shape is OutputShape.mapping:  # key order too: where each key first appears
        assert list(written) == list(_naive(rows, shape))
    assert consolidate(tmp / "results.jsonl", output)[0] == written


def test_a_repeated_key_keeps_its_first_place_and_the_last_answer(tmp_path: Path) -> None:
    rows = [
        {"index": 0, "status": "ok", "title": "Heat", "answer": "first heat"},
        {"index": 1, "status": "ok", "title": "Alien", "answer": "alien"},
        {"index": 2, "status": "ok", "title": "Heat", "answer": "second heat"},
        {"index": 3, "status": "ok", "title": "Heat", "answer": "third heat"},
    ]
    _journal(tmp_path / "results.jsonl", rows)
    output = OutputConfig(filename="o.json", shape=OutputShape.mapping, key_field="title")
    path = write_output(tmp_path, tmp_path / "results.jsonl", output, items=10)
    assert path is not None
    assert path.read_text(encoding="utf-8") == (
        '{\n  "Heat": "third heat",\n  "Alien": "alien"\n}\n'
    )


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


def test_no_answers_make_an_empty_list_or_object(tmp_path: Path) -> None:
    _journal(
        tmp_path / "results.jsonl", [{"index": 0, "status": "failed", "title": "a", "answer": ""}]
    )
    for shape, empty in ((OutputShape.list, []), (OutputShape.mapping, {})):
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
    assert consolidate(results, OutputConfig(shape=OutputShape.list), items=5) == (["kept"], 1)


def test_a_missing_results_file_gives_an_empty_output(tmp_path: Path) -> None:
    assert consolidate(tmp_path / "none.jsonl", OutputConfig(shape=OutputShape.list)) == ([], 0)


def test_shape_none_writes_no_file(tmp_path: Path) -> None:
    _journal(
        tmp_path / "results.jsonl", [{"index": 0, "status": "ok", "title": "a", "answer": "x"}]
    )
    output = OutputConfig(filename="o.json", shape=OutputShape.none)
    assert write_output(tmp_path, tmp_path / "results.jsonl", output, items=10) is None
    assert not (tmp_path / "o.json").exists()
