"""Journals: append-only lines, torn tails tolerated, the store indexes accepted records."""

from __future__ import annotations

import json
from pathlib import Path

from runner._config import OutputConfig, OutputShape
from runner._journal import Journal, Store, read_records
from runner._output import consolidate


def test_each_record_is_one_line_readable_back(tmp_path: Path) -> None:
    path = tmp_path / "j" / "results.jsonl"
    with Journal(path) as journal:
        journal.append({"id": "a", "status": "ok", "key": "k1"})
        journal.append({"id": "b", "status": "failed", "key": "k2", "text": "line\nbreak"})
    assert [r["id"] for _, r in read_records(path)] == ["a", "b"]
    assert path.read_text().count("\n") == 2


def test_a_torn_last_line_is_skipped_and_the_next_write_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "a", "status": "ok", "key": "k1"}) + '\n{"id": "b", "sta')
    assert [r["id"] for _, r in read_records(path)] == ["a"]
    with Journal(path) as journal:
        journal.append({"id": "c", "status": "ok", "key": "k3"})
    assert [r["id"] for _, r in read_records(path)] == ["a", "c"]


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('not json\n[1, 2]\n{"id": "a", "status": "ok", "key": "k"}\n')
    assert [r["id"] for _, r in read_records(path)] == ["a"]


def test_store_keeps_only_accepted_records_by_key(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append({"id": "a", "status": "failed", "key": "k1"})
        journal.append({"id": "a", "status": "ok", "key": "k1", "answer": 1})
        journal.append({"id": "b", "status": "ok", "key": "k2", "answer": 2})
        journal.append({"id": "b", "status": "ok", "key": "k2", "answer": 3})
    store = Store(path)
    assert len(store) == 2 and "k1" in store and "k3" not in store
    assert store.get("k2") == {"id": "b", "status": "ok", "key": "k2", "answer": 3}
    assert store.get("k3") is None


def test_a_missing_store_is_empty(tmp_path: Path) -> None:
    assert len(Store(tmp_path / "none.jsonl")) == 0


def test_consolidated_output_is_in_input_order_and_skips_failures(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with Journal(path) as journal:
        for index, status in ((2, "ok"), (0, "ok"), (1, "failed")):
            journal.append(
                {
                    "id": f"id{index}",
                    "index": index,
                    "status": status,
                    "input": {"title": f"film {index}"},
                    "answer": f"plot {index}",
                }
            )
    as_list, n = consolidate(path, OutputConfig(shape=OutputShape.list))
    assert (as_list, n) == (["plot 0", "plot 2"], 2)
    as_map, _ = consolidate(path, OutputConfig(shape=OutputShape.mapping, key_field="title"))
    assert as_map == {"film 0": "plot 0", "film 2": "plot 2"}
    assert list(as_map) == ["film 0", "film 2"]
