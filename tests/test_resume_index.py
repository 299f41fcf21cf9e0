"""The store's resume index on disk: always what a fresh read of the journal would give,
caught up incrementally, rebuilt when the journal is rewritten, truncated or replaced."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import _resume_index
from runner._config import ProgressMode
from runner._errors import StorageError
from runner._journal import Journal, Store, drop_records, read_records
from runner._progress import catch_up_progress
from runner._resume_index import VERSION, index_path

KEYS = [f"k{i}" for i in range(6)]


def record(key: str, n: int, status: str = "ok") -> dict[str, Any]:
    return {"id": key, "status": status, "key": key, "answer": n}


def expected(path: Path) -> dict[str, dict[str, Any]]:
    """What the index stands for: the latest accepted record of each key, read afresh."""
    found: dict[str, dict[str, Any]] = {}
    for _, r in read_records(path):
        if r.get("status") == "ok" and isinstance(r.get("key"), str):
            found[r["key"]] = r
    return found


def read_back(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    with Store(path) as store:
        return store.get_many([*KEYS, "absent"]), len(store)


class Reads:
    """A progress callback that remembers how many bytes the index read."""

    def __init__(self) -> None:
        self.total: int | None = None

    def __call__(self, done: int, total: int) -> None:
        self.total = total


def bytes_read(path: Path) -> int | None:
    reads = Reads()
    with Store(path, progress=reads):
        return reads.total


# ---------------------------------------------------------------- the property

appends = st.tuples(st.just("append"), st.sampled_from(KEYS), st.sampled_from(["ok", "failed"]))
raw = st.tuples(
    st.just("raw"),
    st.sampled_from([b"garbage\n", b'{"id": "k1", "sta', b"\x00" * 9, b"\n", b"[1]\n"]),
)
whole_without_newline = st.tuples(st.just("unterminated"), st.sampled_from(KEYS))
drops = st.tuples(st.just("drop"), st.sets(st.sampled_from(KEYS), max_size=3))
cuts = st.tuples(st.just("truncate"), st.integers(0, 400))
replaces = st.tuples(st.just("replace"), st.sampled_from(KEYS))
overwrites = st.tuples(st.just("overwrite"), st.sampled_from(KEYS))  # same inode, new bytes
opens = st.just(("open",))
operations = st.lists(
    st.one_of(appends, raw, whole_without_newline, drops, cuts, replaces, overwrites, opens),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(ops=operations)
def test_the_index_always_equals_a_fresh_read_of_the_journal(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]
) -> None:
    path = tmp_path_factory.mktemp("index") / "store.jsonl"
    for n, op in enumerate(ops):
        kind = op[0]
        if kind == "append":
            with Journal(path) as journal:
                journal.append(record(op[1], n, op[2]))
        elif kind == "raw":
            with path.open("ab") as f:
                f.write(op[1])
        elif kind == "unterminated":  # a whole record whose newline never made it
            with path.open("ab") as f:
                f.write(json.dumps(record(op[1], n)).encode())
        elif kind == "drop":
            drop_records(path, op[1])
        elif kind == "truncate" and path.exists():
            os.truncate(path, min(op[1], path.stat().st_size))
        elif kind == "replace":  # another file renamed over it (a copy, a merge tool)
            other = path.with_name("other.jsonl")
            other.write_text(json.dumps(record(op[1], n)) + "\n")
            other.replace(path)
        elif kind == "overwrite":  # rewritten in place: the same inode, other bytes
            path.write_text(json.dumps(record(op[1], n)) + "\n" + json.dumps(record("k5", n)))
        elif kind == "open":
            assert read_back(path) == (expected(path), len(expected(path)))
    assert read_back(path) == (expected(path), len(expected(path)))
    assert read_back(path) == (expected(path), len(expected(path)))  # and once caught up


# ---------------------------------------------------------------- catching up


def test_opening_again_reads_only_the_lines_appended_since(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        for i in range(50):
            journal.append(record(f"k{i}", i))
    assert bytes_read(path) == path.stat().st_size  # the first opening builds the index
    before = path.stat().st_size
    with Journal(path) as journal:
        journal.append(record("k50", 50))
        journal.append(record("k1", 51))
    assert bytes_read(path) == path.stat().st_size - before
    assert bytes_read(path) == 0
    with Store(path) as store:
        assert len(store) == 51 and store.get("k1") == record("k1", 51)


def test_a_store_rewritten_by_drop_records_is_reindexed_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        for i in range(5):
            journal.append(record(f"k{i}", i))
    assert bytes_read(path) == path.stat().st_size
    drop_records(path, {"k2"})
    assert bytes_read(path) == path.stat().st_size
    with Store(path) as store:
        assert "k2" not in store and len(store) == 4


def test_drop_records_forgets_the_mark_before_rewriting(tmp_path: Path) -> None:
    """So a new file that happens to get the old one's inode cannot pass for it."""
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append(record("k1", 1))
        journal.append(record("k2", 2))
    Store(path).close()
    drop_records(path, {"k1"})
    with closing(sqlite3.connect(index_path(path))) as db:
        assert db.execute("SELECT count(*) FROM mark").fetchone() == (0,)


def test_an_index_whose_mark_no_longer_matches_is_rebuilt_even_without_drop_records(
    tmp_path: Path,
) -> None:
    """An outside edit in place (same inode, same length) is caught by the bytes' hashes."""
    path = tmp_path / "store.jsonl"
    path.write_text(json.dumps(record("k1", 1)) + "\n")
    assert Store(path).get("k1") == record("k1", 1)
    path.write_text(json.dumps(record("k2", 1)) + "\n")  # the same length
    with Store(path) as store:
        assert "k1" not in store and store.get("k2") == record("k2", 1)


def test_a_corrupt_index_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append(record("k1", 1))
    index_path(path).write_bytes(b"not a database at all" * 100)
    with Store(path) as store:
        assert store.get("k1") == record("k1", 1)
    with closing(sqlite3.connect(index_path(path))) as db:
        assert db.execute("SELECT version, scanned FROM mark").fetchone() == (
            VERSION,
            path.stat().st_size,
        )


def test_an_index_of_another_version_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append(record("k1", 1))
    assert bytes_read(path) == path.stat().st_size
    db = sqlite3.connect(index_path(path))
    with db:
        db.execute("UPDATE mark SET version = version + 1")
        db.execute("DELETE FROM offsets")
    db.close()
    assert bytes_read(path) == path.stat().st_size
    assert Store(path).get("k1") == record("k1", 1)


def test_a_last_line_without_its_newline_is_found_but_read_again_next_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.jsonl"
    first = json.dumps(record("k1", 1)) + "\n"
    path.write_text(first + json.dumps(record("k2", 2)))
    with Store(path) as store:
        assert store.get("k2") == record("k2", 2) and len(store) == 2
    assert bytes_read(path) == path.stat().st_size - len(first)  # not indexed yet
    with path.open("a") as f:
        f.write("\n")  # completed
    assert bytes_read(path) == path.stat().st_size - len(first)
    assert bytes_read(path) == 0


def test_the_index_is_named_for_the_store_beside_it() -> None:
    assert index_path(Path("j/movie_details.jsonl")) == Path("j/movie_details.index.sqlite")


def test_a_missing_store_makes_no_index(tmp_path: Path) -> None:
    with Store(tmp_path / "store.jsonl") as store:
        assert len(store) == 0 and store.get("k1") is None
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- batches, readers, errors


def test_keys_are_looked_up_a_batch_at_a_time_in_one_query_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        for i in range(0, 25, 2):
            journal.append(record(f"k{i}", i))
    monkeypatch.setattr(_resume_index, "LOOKUP_BATCH", 10)
    with Store(path) as store:
        queries: list[str] = []
        assert store._index is not None
        store._index._db.set_trace_callback(queries.append)
        found = store.get_many([f"k{i}" for i in range(25)])
    assert found == {f"k{i}": record(f"k{i}", i) for i in range(0, 25, 2)}
    assert len([q for q in queries if q.startswith("SELECT")]) == 3


def test_an_open_store_does_not_block_another_reader_or_a_catch_up(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append(record("k1", 1))
    with Store(path) as running:  # the runner's, open for the whole run
        with Journal(path) as journal:
            journal.append(record("k2", 2))
        assert [r["key"] for _, r in read_records(path)] == ["k1", "k2"]  # a merge tool
        with Store(path) as other:  # another process catching the index up meanwhile
            assert other.get("k2") == record("k2", 2)
        assert running.get("k1") == record("k1", 1)


def test_an_index_that_cannot_be_written_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    path.write_text(json.dumps(record("k1", 1)) + "\n")
    index_path(path).mkdir()  # a folder where the index should be
    with pytest.raises(StorageError) as caught:
        Store(path)
    message = str(caught.value)
    assert message.startswith(f"{index_path(path)}: cannot open the resume index: ")
    assert "\n" not in message


def test_a_catch_up_past_the_quiet_second_is_logged_and_a_quick_one_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.jsonl"
    with Journal(path) as journal:
        journal.append(record("k1", 1))
    caplog.set_level(logging.INFO, logger="runner")
    with catch_up_progress(ProgressMode.log) as progress:
        Store(path, progress=progress).close()
    assert caplog.messages == []
    with catch_up_progress(ProgressMode.log, quiet_s=0.0) as progress:
        Store(path, progress=progress).close()
    assert caplog.messages[-1].startswith("resume index: caught up with 0 MB of the store in ")
