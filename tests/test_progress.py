"""The end-of-run summary of failed items."""

from __future__ import annotations

from pathlib import Path

from runner._progress import FailedIds


def test_the_failed_line_names_the_first_ten_ids_the_count_and_the_records_file() -> None:
    failures = FailedIds()
    for i in range(12):
        failures.add(f"id{i}")
    line = failures.summary(Path("/runs/r/results.jsonl"))
    assert line == (
        "12 items failed: id0, id1, id2, id3, id4, id5, id6, id7, id8, id9 and 2 more; their "
        'records (status "failed", with the error) are in /runs/r/results.jsonl'
    )


def test_one_failure_is_named_and_none_says_nothing() -> None:
    failures = FailedIds()
    assert failures.summary(Path("results.jsonl")) is None
    failures.add("abc")
    assert failures.summary(Path("results.jsonl")) == (
        '1 item failed: abc; their records (status "failed", with the error) are in results.jsonl'
    )
