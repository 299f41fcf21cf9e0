"""``report.json``: what a run did, in total and per node, and which shard of the job it was
(the job's output file is :mod:`runner._output`; merging shards: :mod:`runner.merge`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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

    def to_json(self) -> dict[str, Any]:
        """The line as ``report.json`` holds it (``restarts`` only for local nodes)."""
        line = asdict(self)
        if self.restarts is None:
            del line["restarts"]
        return line


@dataclass(frozen=True)
class Totals:
    """What happened to the run's items, and what was sent for them."""

    items: int
    ok: int
    failed: int
    reused: int
    requests_sent: int
    output_tokens: int

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
    """

    job: str
    totals: Totals
    wall_time_s: float
    stopped: str | None
    nodes: dict[str, NodeLine]
    shard: ShardLine | None = None

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
        }
        return {
            "job": self.job,
            **({"shard": asdict(self.shard)} if self.shard is not None else {}),
            "totals": totals,
            "wall_time_s": round(self.wall_time_s, 3),
            "tokens_per_s": self.tokens_per_s,
            "stopped": self.stopped,
            "nodes": {name: line.to_json() for name, line in self.nodes.items()},
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
) -> RunReport:
    """The report of a run, its output tokens summed over the nodes."""
    output_tokens = sum(line.output_tokens for line in nodes.values())
    totals = Totals(items, ok, failed, reused, requests_sent, output_tokens)
    return RunReport(job, totals, wall_time_s, stopped, nodes)
