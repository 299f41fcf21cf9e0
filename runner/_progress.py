"""Progress while a run goes on: a live display on a terminal, periodic log lines otherwise,
and at the end a summary table and the failed items' ids. Before the run, the same for the
resume index catching up with a large store (:func:`catch_up_progress`)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ._config import ProgressMode
from ._estimate import Estimate, eta_seconds
from ._report import NodeLine, RunReport, show_cost
from ._work import Snapshot

log = logging.getLogger("runner")


def resolve_mode(mode: ProgressMode) -> ProgressMode:
    if mode is ProgressMode.auto:
        return ProgressMode.rich if sys.stderr.isatty() else ProgressMode.log
    return mode


WIDE = 12  # more nodes than this: the live view and the log line summarise them


def _nodes_table(snap: Snapshot) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("node")
    table.add_column("in flight", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("state")
    if len(snap.in_flight) > WIDE:
        return _wide_table(table, snap)
    for name, active in snap.in_flight.items():
        state = "benched" if name in snap.benched else "ok"
        table.add_row(name, str(active), str(snap.errors.get(name, 0)), state)
    return table


def _wide_table(table: Table, snap: Snapshot) -> Table:
    """Many nodes: one row for all those serving, the benched ones named (the first few),
    and the nodes with the most errors."""
    benched = set(snap.benched)
    serving = [n for n in snap.in_flight if n not in benched]
    table.add_row(
        f"{len(serving)} nodes",
        str(sum(snap.in_flight[n] for n in serving)),
        str(sum(snap.errors.get(n, 0) for n in serving)),
        "ok",
    )
    if benched:
        table.add_row(
            f"{len(benched)} nodes: {_names(snap.benched)}",
            str(sum(snap.in_flight[n] for n in benched)),
            str(sum(snap.errors.get(n, 0) for n in benched)),
            "benched",
        )
    worst = sorted((n for n in serving if snap.errors.get(n)), key=lambda n: -snap.errors[n])
    for name in worst[:3]:
        table.add_row(f"  most errors: {name}", str(snap.in_flight[name]),
                      str(snap.errors[name]), "ok")  # fmt: skip
    return table


def _names(names: list[str], shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _flights(snap: Snapshot) -> str:
    """The log line's in-flight part: every node, or a total for a wide cluster."""
    if len(snap.in_flight) > WIDE:
        return f"{sum(snap.in_flight.values())} over {len(snap.in_flight)} nodes"
    return " ".join(f"{k}={v}" for k, v in snap.in_flight.items())


def _eta(snap: Snapshot, *, left: int, elapsed: float, estimate: Estimate | None) -> str:
    """The time left, counted in output tokens (:func:`runner._estimate.eta_seconds`)."""
    seconds = eta_seconds(
        items_left=left,
        answered=snap.answers,
        output_tokens=snap.output_tokens,
        elapsed=elapsed,
        tokens_per_answer=estimate.output_tokens_max / estimate.items
        if estimate is not None and estimate.items
        else None,
        probed_tokens_per_s=estimate.tokens_per_s if estimate is not None else None,
    )
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


async def show_progress(
    snapshot: Callable[[], Snapshot],
    *,
    total: int,
    reused: Callable[[], int],
    mode: ProgressMode,
    estimate: Estimate | None = None,
) -> None:
    """Show progress until cancelled (the caller cancels it when the run ends). The ETA
    counts output tokens: the items left times the tokens of an answer, at the tokens per
    second so far (before any answer: the pre-flight's ``estimate``)."""
    mode = resolve_mode(mode)
    if mode is ProgressMode.off:
        await trio.sleep_forever()
    if mode is ProgressMode.log:
        start = trio.current_time()
        while True:
            await trio.sleep(10)
            snap = snapshot()
            done = snap.done + reused()
            elapsed = trio.current_time() - start
            rate = snap.done / elapsed if elapsed > 0 else 0.0
            eta = _eta(snap, left=total - done, elapsed=elapsed, estimate=estimate)
            flights = _flights(snap)
            log.info(
                "progress %d/%d ok=%d failed=%d rate=%.2f/s tokens/s=%.1f eta=%s "
                "in-flight: %s benched: %s",
                done,
                total,
                snap.ok,
                snap.failed,
                rate,
                snap.output_tokens / elapsed if elapsed > 0 else 0.0,
                eta,
                flights,
                _names(snap.benched) if snap.benched else "none",
            )
    progress = Progress(
        TextColumn("[bold]items"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "{task.fields[rate]:.2f}/s {task.fields[tokens]:.0f} tok/s eta {task.fields[eta]}"
        ),
        console=Console(stderr=True),
    )
    bar = progress.add_task("items", total=total, rate=0.0, tokens=0.0, eta="?")
    start = trio.current_time()
    with Live(console=progress.console, refresh_per_second=4, transient=True) as live:
        while True:
            snap = snapshot()
            elapsed = trio.current_time() - start
            done = snap.done + reused()
            progress.update(
                bar,
                completed=done,
                rate=snap.done / elapsed if elapsed else 0.0,
                tokens=snap.output_tokens / elapsed if elapsed else 0.0,
                eta=_eta(snap, left=total - done, elapsed=elapsed, estimate=estimate),
            )
            live.update(Group(progress, _nodes_table(snap)))
            await trio.sleep(0.25)


CATCH_UP_QUIET_S = 1.0  # a catch-up shorter than this shows nothing
LOG_EVERY_S = 10.0  # log lines: one per this many seconds


@contextmanager
def catch_up_progress(
    mode: ProgressMode, *, quiet_s: float = CATCH_UP_QUIET_S
) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(bytes_read, bytes_to_read)`` callback for the resume index catching up
    with the store (:class:`~runner._journal.Store`). Nothing shows during the first
    ``quiet_s`` seconds, so an ordinary start stays silent; past that, a bar on a terminal
    (``rich``) or a log line every 10 s (``log``), and a last log line saying how long it
    took."""
    mode = resolve_mode(mode)
    started = time.monotonic()
    bar: Progress | None = None
    logged = started
    done = [0, 0]

    def progress(read: int, total: int) -> None:
        nonlocal bar, logged
        done[:] = [read, total]
        now = time.monotonic()
        if mode is ProgressMode.off or now - started < quiet_s:
            return
        if mode is ProgressMode.rich:
            if bar is None:
                bar = Progress(
                    TextColumn("[bold]resume index"),
                    BarColumn(),
                    DownloadColumn(),
                    TimeRemainingColumn(),
                    console=Console(stderr=True),
                    transient=True,
                )
                bar.add_task("index", total=total)
                bar.start()
            bar.update(bar.task_ids[0], completed=read, total=total)
        elif now - logged >= LOG_EVERY_S or logged == started:
            logged = now
            log.info("resume index: %s of %s of the store read", _mb(read), _mb(total))

    try:
        yield progress
    finally:
        if bar is not None:
            bar.stop()
        took = time.monotonic() - started
        if mode is not ProgressMode.off and took >= quiet_s:
            log.info("resume index: caught up with %s of the store in %.1f s", _mb(done[1]), took)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def summary_table(report: RunReport) -> Table:
    """The table printed at the end of a run (with the cost when some node has a price)."""
    totals = report.totals
    priced = totals.cost is not None
    cost = ""
    if totals.cost is not None:
        cost = f", cost {_money(totals.cost)}"
        if totals.cost_per_1m_output_tokens is not None:
            cost += f" ({_money(totals.cost_per_1m_output_tokens)} per 1M output tokens)"
    table = Table(
        title=(
            f"{report.job}: {totals.ok}/{totals.items} ok, {totals.failed} failed, "
            f"{totals.reused} reused, {report.wall_time_s:.1f}s{cost}"
        )
    )
    columns = ["node", "requests", "ok", "errors", "tokens", "tok/s", "p50 s", "p95 s"]
    for col in columns + (["cost", "per 1M tok"] if priced else []):
        table.add_column(col, justify="left" if col == "node" else "right")
    rows = _summary_rows(report)
    if len(rows) < len(report.nodes):
        table.caption = f"{len(report.nodes) - len(rows)} more nodes in report.json"
    for name, n in rows:
        table.add_row(
            name,
            str(n.requests),
            str(n.successes),
            str(n.errors),
            str(n.output_tokens),
            f"{n.tokens_per_s}",
            "-" if n.latency_p50_s is None else f"{n.latency_p50_s:.2f}",
            "-" if n.latency_p95_s is None else f"{n.latency_p95_s:.2f}",
            *([_money(n.cost), _money(n.cost_per_1m_output_tokens)] if priced else []),
        )
    return table


def _money(value: float | None) -> str:
    return show_cost(value)


def _summary_rows(report: RunReport) -> list[tuple[str, NodeLine]]:
    """Every node, or for a wide cluster the five fastest, the five slowest and every node
    that had errors (``report.json`` keeps every node)."""
    nodes = list(report.nodes.items())
    if len(nodes) <= WIDE:
        return nodes
    by_speed = sorted(nodes, key=lambda item: -item[1].tokens_per_s)
    keep = {name for name, _ in by_speed[:5] + by_speed[-5:]}
    keep |= {name for name, line in nodes if line.errors}
    return [(name, line) for name, line in by_speed if name in keep]


@dataclass
class FailedIds:
    """The ids of the items that failed, for the end of the run: the first ``shown`` of them,
    and how many there were."""

    shown: int = 10
    first: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, item_id: str) -> None:
        self.count += 1
        if len(self.first) < self.shown:
            self.first.append(item_id)

    def summary(self, results: Path) -> str | None:
        """One line naming the failed ids and where their records are; ``None`` if none."""
        if not self.count:
            return None
        more = self.count - len(self.first)
        ids = ", ".join(self.first) + (f" and {more} more" if more else "")
        item = "item" if self.count == 1 else "items"
        return (
            f'{self.count} {item} failed: {ids}; their records (status "failed", with the '
            f"error) are in {results}"
        )
