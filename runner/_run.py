"""One run of a job, from a checked configuration to the files it leaves behind.

Order of events: prepare the job → a dry run prints the plan and its estimate and stops
(:mod:`runner._dry_run`) → take the job's lock (one runner per job) → scan the job → start or
resolve the nodes → the roll call (each node's slots, where not configured, and context) →
the pre-flight counts the unanswered prompts' tokens and stops the run if any is too long
(:mod:`runner._preflight`) → with ``resume=false``, drop the store's records of the work
about to be redone → open the journals → run the engine, journaling each result as it
arrives → write ``report.json``, ``report.html`` and the job's output file.
Ctrl-C and SIGTERM end the engine the same way (see :mod:`runner._signals`); a file that cannot
be written is a :class:`~runner._errors.StorageError`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from itertools import islice
from pathlib import Path

import trio
from rich.console import Console

from . import _records
from ._batch_output import write_batch_files
from ._cluster import answering_nodes, describe_slots, remote_nodes, started_nodes, take_roll_call
from ._config import ClusterKind, JobKind, RunConfig, ShardNodes
from ._dry_run import dry_run
from ._engine import Engine
from ._errors import ClusterUnavailable, ConfigError, RequestsRefused, StorageError, storage_errors
from ._estimate import Estimate
from ._journal import Journal, Store, drop_records
from ._limits import ensure_descriptors
from ._lock import JobLock
from ._nodes import NodeSpec
from ._outcome import EXIT_CONFIG, EXIT_FAILED_ITEMS, EXIT_OK, EXIT_UNAVAILABLE, Outcome
from ._output import output_filename, write_output
from ._plan import Plan, prepare
from ._preflight import preflight_run
from ._progress import FailedIds, catch_up_progress, show_progress, summary_table
from ._report import RunReport, build_report, write_json
from ._report_page import trace_line, write_report_page
from ._resume_index import LOOKUP_BATCH
from ._run_dir import link_latest, set_aside_earlier_run
from ._sampling import sampling_params
from ._shard import (
    JobFingerprint,
    Shard,
    job_fingerprint,
    resolve_shard,
    shard_line,
    shard_nodes,
    share_slots,
)
from ._signals import StopSignal
from ._work import Work

log = logging.getLogger("runner")


def run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    job_dir: Path | None = None,
    console: Console | None = None,
    stop: StopSignal | None = None,
    environ: Mapping[str, str] | None = None,
) -> Outcome:
    """Run the job described by ``cfg`` and write its files into ``run_dir``. ``job_dir``, the
    folder of the job's YAML file, is searched first for the paths the job names.

    A shard (``shard=I/N``, or the job array's index in ``environ``, by default the process's
    environment: :func:`runner._shard.resolve_shard`) runs only its items, with its own
    journal (``<job>.shard-I-of-N.jsonl``), and writes no consolidated output: its
    ``report.json`` says which shard it was, and ``python -m runner.merge`` builds the output.

    Raises:
        ConfigError: before anything is sent, when the job cannot run as configured.
        JournalLocked: another runner is running the same job.
        StorageError: a file of the run cannot be written (the run stops there).

    ``stop`` tells a SIGTERM from a Ctrl-C when the run is interrupted (exit 143 or 130).
    """
    console = console or Console(stderr=True)
    shard = resolve_shard(cfg.shard, cfg.shards, os.environ if environ is None else environ)
    if cfg.job.kind is JobKind.probe:
        from ._probe import run_probe

        return run_probe(cfg, run_dir, console=console, shard=shard)
    plan = prepare(cfg, job_dir=job_dir)
    whole: JobFingerprint | None = None  # for a shard: the whole job's items, fingerprint
    if shard is not None:
        whole = job_fingerprint(plan.work())
        plan = replace(plan, shard=shard)
    if cfg.dry_run:
        journal = journal_path(cfg, shard)
        return dry_run(cfg, plan, plan.scan(), console, whole, run_dir=run_dir, journal=journal)
    store_path = journal_path(cfg, shard)
    with JobLock(store_path):  # one runner per job (shard): a second one stops here
        return _locked_run(cfg, plan, store_path, run_dir, console, stop or StopSignal(), whole)


def journal_path(cfg: RunConfig, shard: Shard | None) -> Path:
    """The job's resume journal (the store): ``<journal_dir>/<job>.jsonl``, and for a shard
    its own ``<job>.shard-I-of-N.jsonl`` (shards never share a journal or its lock)."""
    name = cfg.job.name if shard is None else f"{cfg.job.name}.{shard.name}"
    return Path(cfg.journal_dir) / f"{name}.jsonl"


def _locked_run(
    cfg: RunConfig,
    plan: Plan,
    store_path: Path,
    run_dir: Path,
    console: Console,
    stop: StopSignal,
    whole: JobFingerprint | None = None,
) -> Outcome:
    total = plan.scan()
    shard = plan.shard
    listed = None
    if cfg.cluster.kind is not ClusterKind.local:  # a bad node list fails before anything moves
        listed = remote_nodes(cfg.cluster, cfg.engine)  # read once: an inventory runs code
        if shard is not None:
            listed = shard_nodes(listed, shard, cfg.shard_nodes)
    if shard is not None and whole is not None:
        log.info(
            "shard %s (%s): %d of the job's %d items; journal %s",
            shard.label,
            shard.source,
            total,
            whole.items,
            store_path,
        )
    with storage_errors(run_dir, "prepare the run directory"):
        run_dir.mkdir(parents=True, exist_ok=True)  # a local cluster's logs go there
    link_latest(run_dir)  # outputs/runs/latest_<job> → this run (runner/_run_dir.py)
    results_path = run_dir / "results.jsonl"
    started = time.monotonic()
    restarts: dict[str, int] = {}
    with started_nodes(
        cfg.cluster,
        cfg.engine,
        engine_id=cfg.model.engine,
        log_dir=run_dir,
        on_restart=lambda name, count, why: restarts.__setitem__(name, count),
        listed=listed,
    ) as configured:
        ensure_descriptors(_connections(configured, cfg))  # the roll call opens them all
        call = take_roll_call(
            configured, api=cfg.model.api, engine_id=cfg.model.engine, settings=cfg.engine
        )
        try:  # before anything of the run directory or the journal changes
            max_tokens = sampling_params(cfg.model, cfg.job)["max_tokens"]
            nodes = answering_nodes(call, max_tokens=max_tokens)
        except ClusterUnavailable as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            return Outcome(EXIT_UNAVAILABLE, f"{cfg.job.name}: nothing sent: {exc}")
        if shard is not None and listed is not None and cfg.shard_nodes is ShardNodes.share:
            nodes = share_slots(nodes, shard)  # the slots are known once the nodes said
        nodes = [node.for_answers(cfg.job.candidates) for node in nodes]  # n=k takes k slots
        ensure_descriptors(_connections(nodes, cfg))  # now with the slots the nodes said
        if cfg.resume:
            with catch_up_progress(cfg.progress) as progress:
                store = Store(store_path, progress=progress)
        else:  # the new results supersede the old: at most one accepted record per key
            store = None
        try:
            found = preflight_run(cfg, plan, nodes, call, store, max_tokens)
        except ConfigError:  # prompts too long: the run stops before anything changed
            if store is not None:
                store.close()
            raise
        if store is None:
            dropped = drop_records(store_path, {work.key for work in plan.work()})
            if dropped:
                log.info("resume=false: %d earlier results of this work were dropped", dropped)
        with storage_errors(run_dir, "prepare the run directory"):
            earlier = set_aside_earlier_run(run_dir, output_filename(cfg.job.output))
        if earlier is not None:
            log.info("the run directory held an earlier run: its files were moved to %s", earlier)
        with (
            Journal(store_path, fsync=cfg.engine.journal_fsync) as store_journal,
            Journal(results_path, fsync=cfg.engine.journal_fsync) as results,
            Journal(run_dir / "requests.jsonl") as requests,  # for report.html
        ):
            ended = _engine_run(
                cfg,
                plan,
                nodes,
                store,
                store_journal,
                results,
                total,
                started,
                restarts,
                stop,
                requests=requests,
                estimate=found,
            )
    report, failures, stopped = ended.report, ended.failures, ended.report.stopped
    interrupted, refused = ended.interrupted, ended.refused
    if shard is not None and whole is not None:
        report = replace(report, shard=shard_line(cfg, shard, total, whole, store_path))
    with storage_errors(run_dir, "write report.json and the output"):
        write_json(run_dir / "report.json", report.to_json())
        write_report_page(run_dir, report)
        output = (  # a shard's part of the output is built by python -m runner.merge
            write_output(run_dir, results_path, cfg.job.output, items=total)
            if shard is None
            else None
        )
        if shard is None and cfg.job.kind is JobKind.batch:
            output = write_batch_files(run_dir, results_path, plan.work())
    console.print(summary_table(report))
    failed_line = failures.summary(results_path)
    if failed_line:
        console.print(failed_line, markup=False, soft_wrap=True)
    totals = report.totals
    where = f"; output: {output}" if output else ""
    if shard is not None:
        where = f"; shard {shard.label}: merge the shards with python -m runner.merge"
    if interrupted:
        console.print(
            f"[yellow]{stop.headline}.[/] {totals.ok} accepted results are "
            f"journaled in {results_path}. Run the same command again to resume."
        )
        code = stop.exit_code
    elif refused:
        console.print(f"[red]Run stopped:[/] {stopped}", highlight=False, soft_wrap=True)
        code = EXIT_CONFIG
    elif stopped:
        console.print(
            f"[red]Run stopped:[/] {stopped}. {totals.ok} accepted results are kept; "
            "run the same command again to resume once nodes are back."
        )
        code = EXIT_UNAVAILABLE
    elif totals.failed or totals.unfinished:
        code = EXIT_FAILED_ITEMS
    else:
        code = EXIT_OK
    summary = (
        f"{cfg.job.name}: {totals.ok}/{totals.items} ok, {totals.failed} failed, "
        f"{totals.reused} reused, {report.wall_time_s:.1f}s, exit {code} -> {run_dir}{where}"
    )
    return Outcome(code, summary)


def _connections(nodes: list[NodeSpec], cfg: RunConfig) -> int:
    """Connections the engine may hold open at once: a worker's each, and a probe's."""
    per_node = cfg.engine.max_slots if cfg.engine.adaptive else None
    return sum((per_node or node.slots) + 1 for node in nodes)


def _first(group: BaseExceptionGroup[StorageError]) -> StorageError:
    """The first error of a group that may nest groups."""
    found = group.exceptions[0]
    return _first(found) if isinstance(found, BaseExceptionGroup) else found


@dataclass(frozen=True)
class _Ended:
    """How the engine's part of a run ended."""

    report: RunReport
    failures: FailedIds
    interrupted: bool
    refused: bool


def _engine_run(
    cfg: RunConfig,
    plan: Plan,
    nodes: list[NodeSpec],
    store: Store | None,
    store_journal: Journal,
    results: Journal,
    total: int,
    started: float,
    restarts: dict[str, int],
    stop: StopSignal,
    *,
    requests: Journal | None = None,
    estimate: Estimate | None = None,
) -> _Ended:
    """Run the engine over the plan's fresh work, journaling each result as it arrives
    (and each request's trace into ``requests``, for report.html)."""
    reused = 0
    failures = FailedIds()
    results_path = results.path

    def on_result(record: dict[str, object]) -> None:
        if record["status"] == "ok":
            store_journal.append(record)  # the store first: what it holds is never re-sent
        else:
            failures.add(str(record["id"]))
        results.append(record)

    def fresh_work() -> Iterator[Work]:
        """The plan's work without what the store holds (those records are appended to
        ``results.jsonl`` as reused), in input order; the store is asked a batch at a time."""
        nonlocal reused
        if store is None:
            yield from plan.work()
            return
        with store:
            works = plan.work()
            while batch := list(islice(works, LOOKUP_BATCH)):
                previous = store.get_many([work.key for work in batch])
                for work in batch:
                    if work.key in previous:
                        results.append(_records.reused(previous[work.key], work))
                        reused += 1
                    else:
                        yield work

    engine = Engine(
        nodes,
        cfg.engine,
        api=cfg.model.api,
        style=cfg.model.style,
        engine_id=cfg.model.engine,
        acceptor=plan.acceptor,
        on_result=on_result,
        on_request=None if requests is None else lambda t: requests.append(trace_line(t)),
    )
    log.info(
        "%s: %d items over %d nodes: %s; results in %s",
        cfg.job.name,
        total,
        len(nodes),
        describe_slots(nodes),
        results_path,
    )
    stopped: str | None = None
    interrupted = refused = False
    broken: StorageError | None = None
    try:
        journals = (store_journal, results)  # with journal_fsync, synced off the event loop
        trio.run(_drive, engine, fresh_work(), total, lambda: reused, cfg, estimate, journals)
    except* ClusterUnavailable as group:
        stopped = str(group.exceptions[0])
    except* RequestsRefused as group:
        stopped = str(group.exceptions[0])
        refused = True
    except* KeyboardInterrupt:  # Ctrl-C, or SIGTERM (runner/_signals.py)
        interrupted = True
        stopped = stop.what
    except* StorageError as group:  # e.g. the disk filled up: journaling is impossible
        broken = _first(group)
    if broken is not None:
        raise broken  # on the way out the journals are closed and local nodes stopped
    report = build_report(
        job=cfg.job.name,
        items=total,
        ok=engine.ok + reused,
        failed=engine.failed,
        reused=reused,
        requests_sent=sum(n.requests for n in engine.nodes),
        wall_time_s=time.monotonic() - started,
        nodes={n.name: n.stats(restarts=restarts.get(n.name)) for n in engine.nodes},
        stopped=stopped,
        estimate=estimate,
    )
    return _Ended(report, failures, interrupted, refused)


async def _drive(
    engine: Engine,
    work: Iterator[Work],
    total: int,
    reused: Callable[[], int],
    cfg: RunConfig,
    estimate: Estimate | None = None,
    journals: tuple[Journal, ...] = (),
) -> None:
    """Run the engine with the progress display beside it, and the journals' syncs."""
    async with trio.open_nursery() as nursery:
        for journal in journals:
            await nursery.start(journal.keep_synced)
        nursery.start_soon(
            partial(
                show_progress,
                engine.snapshot,
                total=total,
                reused=reused,
                mode=cfg.progress,
                estimate=estimate,
            )
        )
        # The items left to send: what the plan holds less what earlier runs answered
        # (found as the work streams), for the engine's tail rule.
        await engine.run(work, size=lambda: total - reused())
        nursery.cancel_scope.cancel()
