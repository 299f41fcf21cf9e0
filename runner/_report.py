"""``report.json``: what a run did, in total and per node, and which shard of the job it was
(the job's output file is :mod:`runner._output`; merging shards: :mod:`runner.merge`)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ._estimate import Estimate
from ._files import replace_file


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically: a reader sees the old file or the new one."""
    with replace_file(path) as out:
        json.dump(value, out, ensure_ascii=False, indent=2)
        out.write("\n")


@dataclass(frozen=True)
class NodeLine:
    """One node's line in ``report.json``.

    Attributes:
        url: its base URL.
        requests: requests sent to it (hedged copies included).
        successes: answers it gave (accepted or not).
        errors: its failures (transport, timeouts, 5xx, bad bodies, refusals).
        hedges: hedged copies it ran.
        busy: "busy, come back" answers it gave.
        slots: requests it was given at once, and where that came from (``slots_from``).
        limit: its in-flight limit at the end (adaptive mode moves it).
        output_tokens: tokens it generated, and per second of its busy time.
        latency_p50_s: median request latency (``None`` before its first answer); p95 beside.
        health: ``admitted`` or ``benched`` at the end; ``last_error`` its last failure.
        restarts: times the runner started it again (local nodes only; ``None`` elsewhere).
        price_per_hour: what the node costs per hour, as configured (``None``: not given).
        cost: ``price_per_hour`` × the run's wall time in hours (a node is paid for the
            whole run); filled by :func:`build_report`.
        cost_per_1m_output_tokens: ``cost`` per million of its output tokens (``None``
            without a price or without output tokens).
    """

    url: str
    requests: int
    successes: int
    errors: int
    hedges: int
    busy: int
    slots: int
    slots_from: str
    limit: int
    output_tokens: int
    tokens_per_s: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    health: str
    last_error: str
    restarts: int | None = None
    price_per_hour: float | None = None
    cost: float | None = None
    cost_per_1m_output_tokens: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The line as ``report.json`` holds it (``restarts`` only for local nodes, the cost
        keys only for a node with a price)."""
        line = asdict(self)
        if self.restarts is None:
            del line["restarts"]
        if self.price_per_hour is None:
            for key in COST_KEYS:
                del line[key]
        return line


COST_KEYS = ("price_per_hour", "cost", "cost_per_1m_output_tokens")
"""A node line's cost keys, in ``report.json`` only when the node has a price."""


def round_cost(value: float) -> float:
    """A cost as ``report.json`` holds it: 6 significant digits."""
    return float(f"{value:.6g}")


def show_cost(value: float | None, *, none: str = "-") -> str:
    """A cost for people (the end-of-run table, ``report.html``): 2 decimals from 1 up, 3
    significant digits below, never in exponent form; ``none`` for no cost."""
    if value is None:
        return none
    if value >= 1:
        return f"{value:,.2f}"
    if value < 1e-8:
        return "0"
    decimals = 2 - math.floor(math.log10(value))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def per_1m_tokens(cost: float | None, output_tokens: int) -> float | None:
    """``cost`` per million output tokens (``None`` without a cost or without tokens)."""
    if cost is None or output_tokens <= 0:
        return None
    return round_cost(cost / output_tokens * 1e6)


@dataclass(frozen=True)
class Totals:
    """What happened to the run's items, and what was sent for them; ``cost`` is the sum of
    the nodes' costs (``None`` when no node has a price), and ``cost_per_1m_output_tokens``
    that cost per million output tokens."""

    items: int
    ok: int
    failed: int
    reused: int
    requests_sent: int
    output_tokens: int
    cost: float | None = None
    cost_per_1m_output_tokens: float | None = None

    @property
    def unfinished(self) -> int:
        """Items neither accepted nor failed (the run stopped first)."""
        return self.items - self.ok - self.failed


@dataclass(frozen=True)
class ShardLine:
    """What a shard's ``report.json`` says of the shard, so that ``python -m runner.merge``
    can check that shards belong together and build the job's output from them.

    Attributes:
        index: the shard, 0-based.
        count: the shards of the job.
        source: where the runner learnt it (``shard=1/4``, ``SLURM_ARRAY_TASK_ID=1, ...``).
        items: the items of this shard.
        job_items: the items of the whole job.
        fingerprint: a digest of every item of the whole job (index, id, request key;
            :func:`runner._shard.job_fingerprint`): equal for every shard of one job.
        nodes: how the nodes were divided (``split``, ``share``; ``local``: its own).
        journal: the shard's own resume journal.
        output: the job's output settings (``filename``, ``shape``, ``key_field``).
    """

    index: int
    count: int
    source: str
    items: int
    job_items: int
    fingerprint: str
    nodes: str
    journal: str
    output: dict[str, str | None]


@dataclass(frozen=True)
class RunReport:
    """What a run did, in total and per node; ``report.json`` is :meth:`to_json`.

    Attributes:
        job: the job's name.
        totals: the items' fates and what was sent.
        wall_time_s: seconds from the start of the run to its end.
        stopped: why the run stopped early (``None``: it ran to its end).
        nodes: each node's line, by name.
        shard: which shard of the job the run was (``None``: the whole job).
        estimate: the pre-flight's estimate of the run (``None``: none was made).
    """

    job: str
    totals: Totals
    wall_time_s: float
    stopped: str | None
    nodes: dict[str, NodeLine]
    shard: ShardLine | None = None
    estimate: Estimate | None = None

    @property
    def tokens_per_s(self) -> float:
        """Output tokens per second of wall time."""
        if self.wall_time_s <= 0:
            return 0
        return round(self.totals.output_tokens / self.wall_time_s, 2)

    def to_json(self) -> dict[str, Any]:
        """The content of ``report.json`` (the keys and their order are the file's format)."""
        totals = asdict(self.totals)
        totals = {
            **{k: totals[k] for k in ("items", "ok", "failed", "reused")},
            "unfinished": self.totals.unfinished,
            **{k: totals[k] for k in ("requests_sent", "output_tokens")},
            **(
                {k: totals[k] for k in ("cost", "cost_per_1m_output_tokens")}
                if self.totals.cost is not None
                else {}
            ),
        }
        return {
            "job": self.job,
            **({"shard": asdict(self.shard)} if self.shard is not None else {}),
            "totals": totals,
            "wall_time_s": round(self.wall_time_s, 3),
            "tokens_per_s": self.tokens_per_s,
            "stopped": self.stopped,
            "nodes": {name: line.to_json() for name, line in self.nodes.items()},
            **({"estimate": self.estimate.to_json()} if self.estimate is not None else {}),
        }


def build_report(
    *,
    job: str,
    items: int,
    ok: int,
    failed: int,
    reused: int,
    requests_sent: int,
    wall_time_s: float,
    nodes: dict[str, NodeLine],
    stopped: str | None = None,
    estimate: Estimate | None = None,
) -> RunReport:
    """The report of a run, its output tokens summed over the nodes; each node with a
    price is paid for the run's whole wall time, and the run's cost is their sum."""
    hours = max(wall_time_s, 0.0) / 3600
    costs: list[float] = []
    priced: dict[str, NodeLine] = {}
    for name, line in nodes.items():
        if line.price_per_hour is not None:
            cost = line.price_per_hour * hours
            costs.append(cost)
            line = replace(
                line,
                cost=round_cost(cost),
                cost_per_1m_output_tokens=per_1m_tokens(cost, line.output_tokens),
            )
        priced[name] = line
    output_tokens = sum(line.output_tokens for line in nodes.values())
    run_cost = sum(costs) if costs else None
    totals = Totals(
        items,
        ok,
        failed,
        reused,
        requests_sent,
        output_tokens,
        cost=None if run_cost is None else round_cost(run_cost),
        cost_per_1m_output_tokens=per_1m_tokens(run_cost, output_tokens),
    )
    return RunReport(job, totals, wall_time_s, stopped, priced, estimate=estimate)
