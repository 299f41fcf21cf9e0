"""One run of a job, from a checked configuration to the files it leaves behind.

Order of events: prepare and scan the job (every prompt rendered, nothing sent) → dry run
stops here → open the journals → start or resolve the nodes → ask the nodes whose slots are
not configured how many they run at once → run the engine, journaling each result as it
arrives → write ``report.json`` and the job's output file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import trio
from rich.console import Console

from . import _records
from ._cluster import ask_slots, describe_slots, remote_nodes, started_nodes
from ._config import ClusterKind, JobKind, RunConfig
from ._engine import Engine
from ._errors import ClusterUnavailable
from ._journal import Journal, Store
from ._nodes import SlotsFrom
from ._outcome import EXIT_FAILED_ITEMS, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNAVAILABLE, Outcome
from ._output import write_output
from ._plan import JobPlan, prepare
from ._progress import show_progress, summary_table
from ._report import build_report, write_json
from ._work import Work

log = logging.getLogger("runner")


def run(cfg: RunConfig, run_dir: Path, *, console: Console | None = None) -> Outcome:
    """Run the job described by ``cfg`` and write its files into ``run_dir``.

    Raises:
        ConfigError: before anything is sent, when the job cannot run as configured.
    """
    console = console or Console(stderr=True)
    if cfg.job.kind is JobKind.probe:
        from ._probe import run_probe

        return run_probe(cfg, run_dir, console=console)
    plan = prepare(cfg)
    total = plan.scan()
    if cfg.dry_run:
        return _dry_run(cfg, plan, total, console)
    store_path = Path(cfg.journal_dir) / f"{cfg.job.name}.jsonl"
    store = Store(store_path) if cfg.resume else None
    if cfg.cluster.kind is not ClusterKind.local:
        remote_nodes(cfg.cluster, cfg.engine)  # a bad node list fails before anything moves
    run_dir.mkdir(parents=True, exist_ok=True)
    earlier = _set_aside_earlier_run(run_dir, cfg.job.output.filename)
    if earlier is not None:
        log.info("the run directory held an earlier run: its files were moved to %s", earlier)
    results_path = run_dir / "results.jsonl"
    started = time.monotonic()
    with (
        Journal(store_path, fsync=cfg.engine.journal_fsync) as store_journal,
        Journal(results_path, fsync=cfg.engine.journal_fsync) as results,
        started_nodes(
            cfg.cluster, cfg.engine, engine_id=cfg.model.engine, log_dir=run_dir
        ) as configured,
    ):
        reused = 0
        nodes = trio.run(
            partial(
                ask_slots,
                configured,
                api=cfg.model.api,
                engine_id=cfg.model.engine,
                settings=cfg.engine,
            )
        )

        def on_result(record: dict[str, object]) -> None:
            if record["status"] == "ok":
                store_journal.append(record)  # the store first: what it holds is never re-sent
            results.append(record)

        def fresh_work() -> Iterator[Work]:
            nonlocal reused
            for work in plan.work():
                previous = store.get(work.key) if store is not None else None
                if previous is not None:
                    results.append(_records.reused(previous, work))
                    reused += 1
                    continue
                yield work

        engine = Engine(
            nodes,
            cfg.engine,
            api=cfg.model.api,
            style=cfg.model.style,
            engine_id=cfg.model.engine,
            acceptor=plan.acceptor,
            on_result=on_result,
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
        interrupted = False
        try:
            trio.run(_drive, engine, fresh_work(), total, lambda: reused, cfg)
        except* ClusterUnavailable as group:
            stopped = str(group.exceptions[0])
        except* KeyboardInterrupt:
            interrupted = True
            stopped = "interrupted"
        report = build_report(
            job=cfg.job.name,
            items=total,
            ok=engine.ok + reused,
            failed=engine.failed,
            reused=reused,
            requests_sent=sum(n.requests for n in engine.nodes),
            wall_time_s=time.monotonic() - started,
            nodes={n.name: n.stats() for n in engine.nodes},
            stopped=stopped,
        )
    write_json(run_dir / "report.json", report)
    output = write_output(run_dir, results_path, cfg.job.output, items=total)
    console.print(summary_table(report))
    totals = report["totals"]
    where = f"; output: {output}" if output else ""
    if interrupted:
        console.print(
            f"[yellow]Interrupted.[/] {totals['ok']} accepted results are journaled in "
            f"{results_path}. Run the same command again to resume."
        )
        code = EXIT_INTERRUPTED
    elif stopped:
        console.print(
            f"[red]Run stopped:[/] {stopped}. {totals['ok']} accepted results are kept; "
            "run the same command again to resume once nodes are back."
        )
        code = EXIT_UNAVAILABLE
    elif totals["failed"] or totals["unfinished"]:
        code = EXIT_FAILED_ITEMS
    else:
        code = EXIT_OK
    summary = (
        f"{cfg.job.name}: {totals['ok']}/{totals['items']} ok, {totals['failed']} failed, "
        f"{totals['reused']} reused, {report['wall_time_s']:.1f}s, exit {code} -> {run_dir}{where}"
    )
    return Outcome(code, summary)


def _set_aside_earlier_run(run_dir: Path, output: str | None) -> Path | None:
    """Move an earlier run's files out of the way when a run directory is reused
    (``hydra.run.dir=`` pinned), so this run's files describe this run alone and nothing of
    the earlier one is overwritten. Returns where they went, if anywhere."""
    present = [
        run_dir / name
        for name in ("results.jsonl", "report.json", output)
        if name and (run_dir / name).exists()
    ]
    if not present:
        return None
    n = 1
    while (run_dir / f"previous-{n}").exists():
        n += 1
    destination = run_dir / f"previous-{n}"
    destination.mkdir()
    for path in present:
        path.rename(destination / path.name)
    return destination


async def _drive(
    engine: Engine, work: Iterator[Work], total: int, reused: Callable[[], int], cfg: RunConfig
) -> None:
    """Run the engine with the progress display beside it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(show_progress, engine.snapshot, total=total, reused=reused, mode=cfg.progress)
        )
        await engine.run(work)
        nursery.cancel_scope.cancel()


def _dry_run(cfg: RunConfig, plan: JobPlan, total: int, console: Console) -> Outcome:
    nodes = remote_nodes(cfg.cluster, cfg.engine)
    console.print(f"[bold]Dry run[/] of job '{cfg.job.name}': nothing is sent.")
    console.print(f"  items: {total} from {plan.input_path}")
    console.print(
        f"  model: {cfg.model.name} (engine '{cfg.model.engine}', {cfg.model.api.value}, "
        f"{cfg.model.style.value})"
    )
    if nodes:
        console.print(f"  nodes: {len(nodes)}: {describe_slots(nodes)}", markup=False)
        if any(n.slots_from is SlotsFrom.default for n in nodes):
            console.print("  (nodes marked default are asked for their slots when the run starts)")
    else:
        local = cfg.cluster.local
        console.print(
            f"  nodes: local cluster of {local.nodes or 'one per core'} {local.server.value} nodes"
        )
    for i, work in enumerate(plan.work()):
        if i == 3:
            break
        console.print(f"  --- prompt {i + 1} (id {work.id}) ---", markup=False)
        if work.request.system:
            console.print(f"  [system] {work.request.system}", markup=False)
        console.print(work.request.prompt, markup=False)
    return Outcome(EXIT_OK, f"{cfg.job.name}: dry run, {total} items, nothing sent")
