"""A kill inside a journal write, replayed at every byte: whatever is left, the journal reads
back every intact record, loses only the torn one, and the next writer starts a fresh line.
A record that lost only its newline is whole: it counts before and after the next write
(before the fix it was skipped by the reader, then revived by the writer's fresh line, so the
next run re-sent the item and journaled it twice).

(``tests/test_journal.py`` has the basic cases; these cut records at arbitrary bytes,
including inside multi-byte characters, and add the zero-filled tails a power cut can leave.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runner._config import OutputConfig, OutputShape
from runner._journal import Journal, Store, read_records
from runner._output import consolidate


def record(i: int, answer: Any) -> dict[str, Any]:
    return {
        "id": f"id{i}",
        "index": i,
        "key": f"k{i}",
        "status": "ok",
        "input": {"title": f"Film {i}"},
        "answer": answer,
    }


answers = st.one_of(
    st.text(max_size=30),  # any unicode: cuts land inside multi-byte characters
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), values=st.lists(answers, min_size=1, max_size=5))
def test_a_record_cut_at_any_byte_is_the_only_one_lost_and_never_comes_back(
    tmp_path_factory: Any, data: st.DataObject, values: list[Any]
) -> None:
    path = tmp_path_factory.mktemp("torn") / "store.jsonl"
    with Journal(path) as journal:
        for i, value in enumerate(values):
            journal.append(record(i, value))
    whole = path.read_bytes()
    last_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    cut = data.draw(st.integers(last_start, len(whole) - 1), label="cut")
    path.write_bytes(whole[:cut])  # the kill landed inside the last write

    whole_records = len(values) if cut == len(whole) - 1 else len(values) - 1
    survivors = [r["id"] for _, r in read_records(path)]
    assert survivors == [f"id{i}" for i in range(whole_records)]
    store = Store(path)
    assert (f"k{len(values) - 1}" in store) == (whole_records == len(values))
    for i in range(whole_records):
        assert store.get(f"k{i}") == record(i, values[i])

    with Journal(path) as journal:  # the next run appends after the torn line
        journal.append(record(99, "after"))
    ids = [r["id"] for _, r in read_records(path)]
    assert ids == [*survivors, "id99"]
    assert Store(path).get("k99") == record(99, "after")


def test_a_zero_filled_tail_after_a_power_cut_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append(record(0, "a"))
    with open(path, "ab") as f:
        f.write(b"\x00" * 37)  # what some filesystems leave of unflushed blocks
    with Journal(path) as journal:
        journal.append(record(1, "b"))
    assert [r["id"] for _, r in read_records(path)] == ["id0", "id1"]
    assert len(Store(path)) == 2


def test_a_torn_results_file_still_consolidates_every_intact_answer(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with Journal(path) as journal:
        for i in range(3):
            journal.append(record(i, f"answer {i}"))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 5])
    value, count = consolidate(path, OutputConfig(shape=OutputShape.list))
    assert (value, count) == (["answer 0", "answer 1"], 2)


def test_a_line_cut_inside_a_multibyte_character_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    line = json.dumps(record(0, "日本語"), ensure_ascii=False).encode()
    cut = line.index("本".encode()) + 1  # inside the character's three bytes
    path.write_bytes(line + b"\n" + line[:cut])
    assert len(list(read_records(path))) == 1
    with Journal(path) as journal:
        journal.append(record(1, "ok"))
    assert [r["id"] for _, r in read_records(path)] == ["id0", "id1"]


def test_a_record_missing_only_its_newline_is_read_once_before_and_after_healing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.jsonl"
    path.write_bytes(json.dumps(record(0, "a")).encode())  # the newline never made it
    assert "k0" in Store(path)  # so a re-run does not send the item again...
    with Journal(path) as journal:
        journal.append(record(1, "b"))
    keys = [r["key"] for _, r in read_records(path)]
    assert keys == ["k0", "k1"]  # ...and the healed line is not a second copy of anything
