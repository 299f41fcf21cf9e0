"""Everything a run writes, owned by one object: :class:`Sink`.

A run writes three journals while its engine runs, each line the moment it is known:

* the store (``<journal_dir>/<job>.jsonl``, the resume source of truth) gets every accepted
  record, *before* ``results.jsonl`` does, so what the store holds is never sent again;
* ``results.jsonl`` in the run directory gets every record of this run: the engine's, and
  the store's records of work an earlier run answered (``"reused": true``);
* ``requests.jsonl`` gets each request's trace, for ``report.html``.

Opening the sink first moves an earlier run's files out of a reused run directory
(:func:`~runner._run_dir.set_aside_earlier_run`), then opens the journals; closing it closes
them (with ``engine.journal_fsync``, after syncing what is not on disk yet) and the store it
was lent. At the end :meth:`Sink.finish` writes ``report.json``, ``report.html`` and, for
the whole job (a shard leaves that to ``python -m runner.merge``), the consolidated output
or an OpenAI Batch run's files. A file that cannot be written is a
:class:`~runner._errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import trio

from . import _records
from ._batch_output import write_batch_files
from ._config import OutputConfig
from ._errors import storage_errors
from ._journal import Journal, Store
from ._output import output_filename, write_output
from ._progress import FailedIds
from ._report import RunReport, write_json
from ._report_page import trace_line, write_report_page
from ._resume_index import LOOKUP_BATCH
from ._run_dir import set_aside_earlier_run
from ._work import RequestTrace, Work

log = logging.getLogger("runner")


class Sink:
    """The files of one run: its journals while the engine runs, its report and output after.

    Use it as a context manager around the engine; :meth:`on_result` and :meth:`on_request`
    are the engine's callbacks, :meth:`fresh` filters its work, :meth:`keep_synced` runs
    beside it, and :meth:`finish` (once the sink is closed) writes the run's last files.

    Args:
        run_dir: the run directory (it must exist).
        store_path: the store's journal.
        output: the job's output settings (its file is set aside with an earlier run's).
        store: the store to reuse earlier results from (``None`` with ``resume=false``:
            all the work is fresh); the sink closes it.
        fsync: sync the store and ``results.jsonl`` to disk (``engine.journal_fsync``).

    Attributes:
        results_path: ``results.jsonl``.
        reused: how many items :meth:`fresh` found in the store so far.
        failures: the items that failed.
    """

    def __init__(
        self,
        run_dir: Path,
        store_path: Path,
        *,
        output: OutputConfig,
        store: Store | None = None,
        fsync: bool = False,
    ) -> None:
        self.run_dir = run_dir
        self.store_path = store_path
        self.results_path = run_dir / "results.jsonl"
        self.reused = 0
        self.failures = FailedIds()
        self._output = output
        self._store = store
        self._fsync = fsync
        self._closing = contextlib.ExitStack()
        self._open: _Journals | None = None

    def __enter__(self) -> Sink:
        with storage_errors(self.run_dir, "prepare the run directory"):
            earlier = set_aside_earlier_run(self.run_dir, output_filename(self._output))
        if earlier is not None:
            log.info("the run directory held an earlier run: its files were moved to %s", earlier)
        with contextlib.ExitStack() as opening:  # a journal that fails to open closes the rest
            if self._store is not None:
                opening.callback(self._store.close)
            fsync = self._fsync
            self._open = _Journals(
                store=opening.enter_context(Journal(self.store_path, fsync=fsync)),
                results=opening.enter_context(Journal(self.results_path, fsync=fsync)),
                requests=opening.enter_context(Journal(self.run_dir / "requests.jsonl")),
            )
            self._closing = opening.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._open = None
        self._closing.close()

    def on_result(self, record: dict[str, Any]) -> None:
        """Journal one finished item: an accepted record goes to the store first (what it
        holds is never re-sent), then every record to ``results.jsonl``."""
        if record["status"] == "ok":
            self._journals.store.append(record)
        else:
            self.failures.add(str(record["id"]))
        self._journals.results.append(record)

    def on_request(self, trace: RequestTrace) -> None:
        """Journal one request's trace into ``requests.jsonl`` (for ``report.html``)."""
        self._journals.requests.append(trace_line(trace))

    def fresh(self, works: Iterator[Work]) -> Iterator[Work]:
        """``works`` without what the store holds, in input order: those records are
        appended to ``results.jsonl`` as reused, and counted in :attr:`reused`. The store is
        asked :data:`~runner._resume_index.LOOKUP_BATCH` keys at a time."""
        if self._store is None:
            yield from works
            return
        with self._store:
            while batch := list(islice(works, LOOKUP_BATCH)):
                previous = self._store.get_many([work.key for work in batch])
                for work in batch:
                    if work.key in previous:
                        self._journals.results.append(_records.reused(previous[work.key], work))
                        self.reused += 1
                    else:
                        yield work

    async def keep_synced(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """With ``fsync``, sync the store and ``results.jsonl`` off the event loop until
        cancelled (:meth:`~runner._journal.Journal.keep_synced`; start it with
        ``nursery.start`` in the nursery that runs the engine)."""
        async with trio.open_nursery() as nursery:
            for journal in (self._journals.store, self._journals.results):
                await nursery.start(journal.keep_synced)
            task_status.started()

    def finish(
        self,
        report: RunReport,
        *,
        items: int,
        shard: bool = False,
        batch: Iterable[Work] | None = None,
    ) -> Path | None:
        """Write ``report.json``, ``report.html`` and, unless this is a ``shard``, the job's
        consolidated output (``items``: the job's item count) and, for a batch job, its files
        for the items ``batch`` streams (the plan's work, in input order). Returns the output
        file's path, if one was written.
        """
        with storage_errors(self.run_dir, "write report.json and the output"):
            write_json(self.run_dir / "report.json", report.to_json())
            write_report_page(self.run_dir, report)
            if shard:  # a shard's part of the output is built by python -m runner.merge
                return None
            output = write_output(self.run_dir, self.results_path, self._output, items=items)
            if batch is not None:
                output = write_batch_files(self.run_dir, self.results_path, batch)
        return output

    @property
    def _journals(self) -> _Journals:
        if self._open is None:
            raise RuntimeError("the sink's journals are not open: use it as `with Sink(...)`")
        return self._open


@dataclass(frozen=True)
class _Journals:
    """The journals an open sink writes."""

    store: Journal
    results: Journal
    requests: Journal
