"""Progress while a run goes on: a live display on a terminal, periodic log lines otherwise,
and at the end a summary table and the failed items' ids."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ._config import ProgressMode
from ._engine import Snapshot
from ._report import RunReport

log = logging.getLogger("runner")


def resolve_mode(mode: ProgressMode) -> ProgressMode:
    if mode is ProgressMode.auto:
        return ProgressMode.rich if sys.stderr.isatty() else ProgressMode.log
    return mode


def _nodes_table(snap: Snapshot) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("node")
    table.add_column("in flight", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("state")
    for name, active in snap.in_flight.items():
        state = "benched" if name in snap.benched else "ok"
        table.add_row(name, str(active), str(snap.errors.get(name, 0)), state)
    return table


async def show_progress(
    snapshot: Callable[[], Snapshot], *, total: int, reused: Callable[[], int], mode: ProgressMode
) -> None:
    """Show progress until cancelled (the caller cancels it when the run ends)."""
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
            eta = (total - done) / rate if rate > 0 else float("inf")
            flights = " ".join(f"{k}={v}" for k, v in snap.in_flight.items())
            log.info(
                "progress %d/%d ok=%d failed=%d rate=%.2f/s eta=%s in-flight: %s benched: %s",
                done,
                total,
                snap.ok,
                snap.failed,
                rate,
                f"{eta:.0f}s" if eta != float("inf") else "?",
                flights,
                ",".join(snap.benched) or "none",
            )
    progress = Progress(
        TextColumn("[bold]items"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.2f}/s"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    bar = progress.add_task("items", total=total, rate=0.0)
    start = trio.current_time()
    with Live(console=progress.console, refresh_per_second=4, transient=True) as live:
        while True:
            snap = snapshot()
            elapsed = trio.current_time() - start
            progress.update(
                bar, completed=snap.done + reused(), rate=snap.done / elapsed if elapsed else 0.0
            )
            live.update(Group(progress, _nodes_table(snap)))
            await trio.sleep(0.25)


def summary_table(report: RunReport) -> Table:
    """The table printed at the end of a run."""
    totals = report.totals
    table = Table(
        title=(
            f"{report.job}: {totals.ok}/{totals.items} ok, {totals.failed} failed, "
            f"{totals.reused} reused, {report.wall_time_s:.1f}s"
        )
    )
    for col in ("node", "requests", "ok", "errors", "tokens", "tok/s", "p50 s", "p95 s"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for name, n in report.nodes.items():
        table.add_row(
            name,
            str(n.requests),
            str(n.successes),
            str(n.errors),
            str(n.output_tokens),
            f"{n.tokens_per_s}",
            "-" if n.latency_p50_s is None else f"{n.latency_p50_s:.2f}",
            "-" if n.latency_p95_s is None else f"{n.latency_p95_s:.2f}",
        )
    return table


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
