"""The sink: what a run writes, in which order, and what it reuses from the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from runner import _journal, _sink
from runner._config import OutputConfig
from runner._journal import Journal, Store, read_records
from runner._report import build_report
from runner._request import Api, GenerationRequest, Style
from runner._sink import Sink
from runner._work import Work

OUTPUT = OutputConfig(filename="out.json")


def works(n: int) -> list[Work]:
    found = []
    for i in range(n):
        request = GenerationRequest(Api.textsynth, Style.completion, "m", f"item {i}", seed=1)
        found.append(Work(f"id{i}", i, {"n": i}, request, request.key()))
    return found


def ok(work: Work, answer: Any = "yes") -> dict[str, Any]:
    return {"id": work.id, "index": work.index, "status": "ok", "key": work.key, "answer": answer}


def failed(work: Work) -> dict[str, Any]:
    return {"id": work.id, "index": work.index, "status": "failed", "key": work.key}


def lines(path: Path) -> list[dict[str, Any]]:
    return [record for _, record in read_records(path)]


def test_an_accepted_record_is_in_the_store_journal_before_results_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[Path] = []
    append = Journal.append

    def spy(self: Journal, record: dict[str, Any]) -> None:
        written.append(self.path)
        append(self, record)

    monkeypatch.setattr(_journal.Journal, "append", spy)
    sink = Sink(tmp_path, tmp_path / "store.jsonl", output=OUTPUT)
    [work] = works(1)
    with sink:
        sink.on_result(ok(work))
    assert written == [tmp_path / "store.jsonl", tmp_path / "results.jsonl"]
    assert lines(tmp_path / "store.jsonl") == lines(tmp_path / "results.jsonl") == [ok(work)]


def test_a_failed_record_is_not_written_to_the_store_and_is_named_among_the_failures(
    tmp_path: Path,
) -> None:
    sink = Sink(tmp_path, tmp_path / "store.jsonl", output=OUTPUT)
    first, second = works(2)
    with sink:
        sink.on_result(failed(first))
        sink.on_result(ok(second))
    assert lines(tmp_path / "store.jsonl") == [ok(second)]
    assert lines(tmp_path / "results.jsonl") == [failed(first), ok(second)]
    assert sink.failures.count == 1
    assert sink.failures.summary(sink.results_path) == (
        f'1 item failed: id0; their records (status "failed", with the error) are in '
        f"{tmp_path / 'results.jsonl'}"
    )


def test_work_the_store_holds_is_reused_not_yielded_and_counted_in_input_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over several lookup batches, the reused records go to results.jsonl as the work
    streams past them, marked reused and carrying this run's id and input."""
    monkeypatch.setattr(_sink, "LOOKUP_BATCH", 2)
    store_path = tmp_path / "journal" / "job.jsonl"
    todo = works(5)
    with Journal(store_path) as earlier:
        for i in (1, 2, 4):
            earlier.append({**ok(todo[i], answer=i), "id": "old", "input": {"n": "old"}})
    sink = Sink(tmp_path / "run", store_path, output=OUTPUT, store=Store(store_path))
    (tmp_path / "run").mkdir()
    with sink:
        fresh = []
        for work in sink.fresh(iter(todo)):
            fresh.append(work)
            sink.on_result(ok(work, answer=work.index))
    assert fresh == [todo[0], todo[3]]
    assert sink.reused == 3
    results = lines(sink.results_path)
    assert [(r["id"], r["answer"], r.get("reused", False)) for r in results] == [
        ("id0", 0, False),
        ("id1", 1, True),
        ("id2", 2, True),
        ("id3", 3, False),
        ("id4", 4, True),
    ]
    assert results[1]["input"] == {"n": 1}
    assert len(lines(store_path)) == 5  # reused records are not journaled into the store again


def test_without_a_store_every_work_is_fresh_and_nothing_is_reused(tmp_path: Path) -> None:
    todo = works(3)
    with Sink(tmp_path, tmp_path / "store.jsonl", output=OUTPUT) as sink:
        assert list(sink.fresh(iter(todo))) == todo
    assert sink.reused == 0
    assert lines(sink.results_path) == []


def test_opening_the_sink_sets_an_earlier_runs_files_aside_then_opens_fresh_journals(
    tmp_path: Path,
) -> None:
    (tmp_path / "results.jsonl").write_text(json.dumps({"id": "earlier"}) + "\n")
    (tmp_path / "out.json").write_text("[]\n")
    sink = Sink(tmp_path, tmp_path / "store.jsonl", output=OUTPUT)
    assert not (tmp_path / "store.jsonl").exists()  # nothing changes before it is opened
    with sink:
        assert lines(tmp_path / "results.jsonl") == []
        assert (tmp_path / "requests.jsonl").exists() and (tmp_path / "store.jsonl").exists()
    assert lines(tmp_path / "previous-1" / "results.jsonl") == [{"id": "earlier"}]
    assert (tmp_path / "previous-1" / "out.json").read_text() == "[]\n"


def test_a_closed_sink_refuses_records_rather_than_losing_them(tmp_path: Path) -> None:
    sink = Sink(tmp_path, tmp_path / "store.jsonl", output=OUTPUT)
    [work] = works(1)
    with pytest.raises(RuntimeError, match="not open"):
        sink.on_result(ok(work))


async def test_with_fsync_the_journals_are_synced_by_keep_synced_not_by_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    both = trio.Event()

    def fsync(fd: int) -> None:  # in the sync tasks' worker threads
        synced.append(fd)
        if len(synced) == 2:
            trio.from_thread.run_sync(both.set)

    monkeypatch.setattr(_journal.os, "fsync", fsync)
    [work] = works(1)
    with Sink(tmp_path, tmp_path / "store.jsonl", output=OUTPUT, fsync=True) as sink:
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.keep_synced)
            sink.on_result(ok(work))
            assert synced == []  # left to the sync tasks, off the writer's path
            with trio.fail_after(5):
                await both.wait()
            nursery.cancel_scope.cancel()
    assert len(synced) == 2  # once each for the store and results.jsonl; close had nothing left


def report(items: int) -> Any:
    return build_report(
        job="job", items=items, ok=items, failed=0, reused=0, requests_sent=items,
        wall_time_s=1.0, nodes={},
    )  # fmt: skip


def test_finish_writes_the_report_the_page_and_the_output(tmp_path: Path) -> None:
    todo = works(2)
    with Sink(tmp_path, tmp_path / "store.jsonl", output=OUTPUT) as sink:
        for work in todo:
            sink.on_result(ok(work, answer=work.index))
    assert sink.finish(report(2), items=2) == tmp_path / "out.json"
    assert json.loads((tmp_path / "out.json").read_text()) == [0, 1]
    assert json.loads((tmp_path / "report.json").read_text())["totals"]["ok"] == 2
    assert (tmp_path / "report.html").exists()


def test_a_shard_finishes_with_its_report_but_no_consolidated_output(tmp_path: Path) -> None:
    with Sink(tmp_path, tmp_path / "store.jsonl", output=OUTPUT) as sink:
        sink.on_result(ok(works(1)[0]))
    assert sink.finish(report(1), items=1, shard=True, batch=iter(works(1))) is None
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.html").exists()
    assert not (tmp_path / "out.json").exists()
    assert not (tmp_path / "batch_output.jsonl").exists()
