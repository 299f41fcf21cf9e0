"""One run of a job, from a checked configuration to the files it leaves behind.

Order of events: prepare the job → a dry run prints the plan and its estimate and stops
(:mod:`runner._dry_run`) → take the job's lock (one runner per job) → scan the job → start or
resolve the nodes → the roll call (each node's slots, where not configured, and context) →
the pre-flight counts the unanswered prompts' tokens and stops the run if any is too long
(:mod:`runner._preflight`) → with ``resume=false``, drop the store's records of the work
about to be redone → open the run's sink (:class:`runner._sink.Sink`: it owns every file the
run writes) → run the engine over the work the store does not hold, the sink journaling each
result as it arrives → the report → the sink writes ``report.json``, ``report.html`` and the
job's output file.
Ctrl-C and SIGTERM end the engine the same way (see :mod:`runner._signals`); a file that cannot
be written is a :class:`~runner._errors.StorageError`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import trio
from rich.console import Console

from ._cluster import answering_nodes, describe_slots, remote_nodes, started_nodes, take_roll_call
from ._config import ClusterKind, JobKind, RunConfig, ShardNodes
from ._dry_run import dry_run
from ._engine import Engine
from ._errors import ClusterUnavailable, ConfigError, RequestsRefused, StorageError, storage_errors
from ._estimate import Estimate
from ._journal import Store, drop_records
from ._limits import ensure_descriptors
from ._lock import JobLock
from ._nodes import NodeSpec
from ._outcome import EXIT_CONFIG, EXIT_FAILED_ITEMS, EXIT_OK, EXIT_UNAVAILABLE, Outcome
from ._plan import Plan, prepare
from ._preflight import preflight_run
from ._progress import catch_up_progress, show_progress, summary_table
from ._report import RunReport, build_report
from ._run_dir import link_latest
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
from ._sink import Sink
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
        sink = Sink(
            run_dir, store_path, output=cfg.job.output, store=store, fsync=cfg.engine.journal_fsync
        )
        with sink:  # an earlier run's files set aside, then the journals opened
            ended = _engine_run(cfg, plan, nodes, sink, total, started, restarts, stop, found)
    report, stopped = ended.report, ended.report.stopped
    interrupted, refused = ended.interrupted, ended.refused
    if shard is not None and whole is not None:
        line = shard_line(cfg, shard, total, whole, store_path, plan.input_path)
        report = replace(report, shard=line)
    batch = plan.work() if cfg.job.kind is JobKind.batch else None
    output = sink.finish(report, items=total, shard=shard is not None, batch=batch)
    results_path = sink.results_path
    console.print(summary_table(report))
    failed_line = sink.failures.summary(results_path)
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
    interrupted: bool
    refused: bool


def _engine_run(
    cfg: RunConfig,
    plan: Plan,
    nodes: list[NodeSpec],
    sink: Sink,
    total: int,
    started: float,
    restarts: dict[str, int],
    stop: StopSignal,
    estimate: Estimate | None = None,
) -> _Ended:
    """Run the engine over the plan's work that the store does not hold, the sink
    journaling each result (and each request's trace, for report.html) as it arrives."""
    engine = Engine(
        nodes,
        cfg.engine,
        api=cfg.model.api,
        style=cfg.model.style,
        engine_id=cfg.model.engine,
        acceptor=plan.acceptor,
        on_result=sink.on_result,
        on_request=sink.on_request,
    )
    log.info(
        "%s: %d items over %d nodes: %s; results in %s",
        cfg.job.name,
        total,
        len(nodes),
        describe_slots(nodes),
        sink.results_path,
    )
    stopped: str | None = None
    interrupted = refused = False
    broken: StorageError | None = None
    try:
        trio.run(_drive, engine, sink, plan.work(), total, cfg, estimate)
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
        ok=engine.ok + sink.reused,
        failed=engine.failed,
        reused=sink.reused,
        requests_sent=sum(n.requests for n in engine.nodes),
        wall_time_s=time.monotonic() - started,
        nodes={n.name: n.stats(restarts=restarts.get(n.name)) for n in engine.nodes},
        stopped=stopped,
        estimate=estimate,
    )
    return _Ended(report, interrupted, refused)


async def _drive(
    engine: Engine,
    sink: Sink,
    works: Iterator[Work],
    total: int,
    cfg: RunConfig,
    estimate: Estimate | None = None,
) -> None:
    """Run the engine over the work the sink finds fresh, with the progress display and the
    sink's journal syncs beside it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.keep_synced)  # with journal_fsync, synced off the event loop
        nursery.start_soon(
            partial(
                show_progress,
                engine.snapshot,
                total=total,
                reused=lambda: sink.reused,
                mode=cfg.progress,
                estimate=estimate,
            )
        )
        # The items left to send: what the plan holds less what earlier runs answered
        # (found as the work streams), for the engine's tail rule.
        await engine.run(sink.fresh(works), size=lambda: total - sink.reused)
        nursery.cancel_scope.cancel()
