"""What one strategy run gave: counted from its traces (pure functions)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._behaviour import LogEntry
from ._strategy import Trace


@dataclass
class RunResult:
    """One strategy's run of one scenario.

    Attributes:
        strategy: the strategy's name.
        run: the run's number (0-based).
        status: ``done``, ``skipped`` (e.g. the engine is not wired) or ``timeout``.
        note: why it was skipped or stopped.
        items: items given to the strategy.
        ok: items with an accepted answer.
        failed: items the strategy gave up on.
        lost: items with no final trace (must be 0).
        requests: requests sent.
        outcomes: requests per outcome.
        makespan: simulated seconds from the first request sent to the last item settled.
        ratio: ``makespan`` / the scenario's lower bound.
        wall_s: real seconds the strategy call took.
        cpu_s: CPU seconds the harness process used meanwhile (the client's CPU).
        node_requests: requests the simulated nodes received (their log).
        sim_cpu_s: CPU seconds the simulation process used.
        load: the machine's 1-minute load average before and after the run.
        peak_rss_mb: peak RSS of the client process by item count (memory scenario).
        node_log: the nodes' request log (for timelines; not written to JSON).
    """

    strategy: str
    run: int
    status: str = "done"
    note: str = ""
    items: int = 0
    ok: int = 0
    failed: int = 0
    lost: int = 0
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    makespan: float | None = None
    ratio: float | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    node_requests: int | None = None
    sim_cpu_s: float | None = None
    load: tuple[float, float] | None = None
    peak_rss_mb: dict[int, float] = field(default_factory=dict)
    node_log: list[LogEntry] = field(default_factory=list, repr=False)

    @property
    def requests_per_s(self) -> float | None:
        return self.requests / self.wall_s if self.wall_s > 0 else None

    @property
    def cpu_ms_per_request(self) -> float | None:
        return 1000 * self.cpu_s / self.requests if self.requests else None

    @property
    def hedged_share(self) -> float | None:
        """Hedged copies that lost their race (cancelled, or answered after the winner), as
        a share of all requests: the requests the run sent twice."""
        if not self.requests:
            return None
        return self.outcomes.get("hedge_lost", 0) / self.requests

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["node_log"]
        data["requests_per_s"] = self.requests_per_s
        data["cpu_ms_per_request"] = self.cpu_ms_per_request
        data["hedged_share"] = self.hedged_share
        return data


def count(result: RunResult, item_ids: Iterable[str], traces: Sequence[Trace]) -> None:
    """Fill ``result``'s counts from the traces of a run over ``item_ids``."""
    finals: dict[str, Trace] = {}
    for trace in traces:
        if trace.final:
            finals[trace.item] = trace
    expected = set(item_ids)
    result.items = len(expected)
    result.ok = sum(1 for i in expected if i in finals and finals[i].outcome == "ok")
    result.failed = sum(1 for i in expected if i in finals and finals[i].outcome != "ok")
    result.lost = len(expected - finals.keys())
    result.requests = sum(1 for t in traces if t.outcome != "no_node")
    result.outcomes = dict(Counter(t.outcome for t in traces))
    if traces:
        first = min(t.start for t in traces)
        last = max((t.end for t in finals.values()), default=first)
        result.makespan = last - first


def medians(results: Sequence[RunResult]) -> dict[str, dict[str, float | None]]:
    """Per strategy, the median of each measure over its completed runs."""
    by_strategy: dict[str, list[RunResult]] = {}
    for r in results:
        if r.status == "done":
            by_strategy.setdefault(r.strategy, []).append(r)
    out: dict[str, dict[str, float | None]] = {}
    for name, runs in by_strategy.items():
        row: dict[str, float | None] = {"runs": float(len(runs))}
        for key in (
            "makespan", "ratio", "ok", "failed", "lost", "requests", "node_requests",
            "wall_s", "cpu_s", "sim_cpu_s",
        ):  # fmt: skip
            row[key] = _median(getattr(r, key) for r in runs)
        row["requests_per_s"] = _median(r.requests_per_s for r in runs)
        row["cpu_ms_per_request"] = _median(r.cpu_ms_per_request for r in runs)
        hedged = _median(r.hedged_share for r in runs)
        row["hedged_pct"] = None if hedged is None else 100 * hedged
        for size in sorted({s for r in runs for s in r.peak_rss_mb}):
            row[f"peak_rss_mb@{size}"] = _median(r.peak_rss_mb.get(size) for r in runs)
        out[name] = row
    return out


def _median(values: Iterable[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None
