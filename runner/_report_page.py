"""``report.html``: one self-contained page a person looks at after a run.

It is drawn from the run's own files: ``requests.jsonl`` (one line per request the engine
sent, :func:`trace_line`), ``results.jsonl`` and the :class:`~runner._report.RunReport`. The
page has no script and loads nothing from the network: its charts are inline SVG, with a
tooltip (``<title>``) on each bar. It shows

- the totals of the run;
- a timeline per node: each request a bar from its start to its end, coloured by outcome, on
  as many lanes as the node had requests in flight;
- output tokens per second over the run;
- the latency distribution of each node's answered requests;
- failures by cause: request outcomes other than ``ok``, and the errors of failed items;
- the pre-flight's estimate (items, tokens, time, cost) beside what the run did;
- what the run cost, per node and in total, when some node has a price per hour.

Memory stays bounded whatever the run's size: the files are read line by line, latencies go
into a fixed log-scale histogram per node, and the timeline draws at most :data:`MAX_BARS`
requests (every k-th one beyond, and the page says so) for at most :data:`MAX_ROWS` nodes.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from ._files import replace_file
from ._report import RunReport, show_cost
from ._work import RequestTrace

FILES = ("requests.jsonl", "report.html")  # what a run directory gains from this module
MAX_BARS = 5000  # requests drawn on the timeline
MAX_ROWS = 60  # nodes drawn on the timeline (the busiest)
TIME_BINS = 60  # bins of the throughput chart
LATENCY_EDGES = tuple(0.01 * 10 ** (i / 8) for i in range(41))  # 10 ms .. 1000 s
MAX_CAUSES = 500  # distinct error lines counted; the rest are "other"
COLOURS = {
    "ok": "#2e7d32",
    "rejected": "#f9a825",
    "busy": "#90a4ae",
    "cancelled": "#b0bec5",
    "discarded": "#cfd8dc",
}
FAILURE_COLOUR = "#c62828"


def trace_line(trace: RequestTrace) -> dict[str, Any]:
    """The line of ``requests.jsonl`` for one request (times in seconds of trio's clock)."""
    return {
        "node": trace.node,
        "item": trace.item,
        "started": round(trace.started, 4),
        "ended": round(trace.ended, 4),
        "outcome": trace.outcome,
        "final": trace.final,
        "output_tokens": trace.output_tokens,
    }


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                value = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if isinstance(value, dict):
                yield value


@dataclass
class _NodeFigures:
    requests: int = 0
    latencies: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES) + 1))


def _bin(value: float) -> int:
    for i, edge in enumerate(LATENCY_EDGES):
        if value < edge:
            return i
    return len(LATENCY_EDGES)


def _quantile(counts: list[int], q: float) -> float | None:
    """The upper edge of the histogram bin holding quantile ``q`` (None when empty)."""
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= q * total:
            return LATENCY_EDGES[min(i, len(LATENCY_EDGES) - 1)]
    return LATENCY_EDGES[-1]


def _lanes(bars: list[dict[str, Any]]) -> int:
    """Give each bar of one node the lowest lane free at its start; the lane count."""
    ends: list[float] = []
    for bar in sorted(bars, key=lambda b: b["started"]):
        for lane, end in enumerate(ends):
            if end <= bar["started"]:
                ends[lane] = bar["ended"]
                bar["lane"] = lane
                break
        else:
            bar["lane"] = len(ends)
            ends.append(bar["ended"])
    return max(len(ends), 1)


def page_context(report: RunReport, requests: Path, results: Path) -> dict[str, Any]:
    """Everything the page shows, read from the run's files in bounded memory."""
    count, start, end = 0, math.inf, -math.inf
    nodes: dict[str, _NodeFigures] = defaultdict(_NodeFigures)
    outcomes: Counter[str] = Counter()
    for line in _lines(requests):
        count += 1
        start, end = min(start, line["started"]), max(end, line["ended"])
        figures = nodes[line["node"]]
        figures.requests += 1
        outcomes[line["outcome"]] += 1
        if line["outcome"] == "ok":
            figures.latencies[_bin(line["ended"] - line["started"])] += 1
    span = max(end - start, 1e-9) if count else 1.0
    stride = max(1, math.ceil(count / MAX_BARS))
    rows = sorted(nodes, key=lambda n: -nodes[n].requests)[:MAX_ROWS]
    shown = set(rows)
    bars: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
    tokens = [0] * TIME_BINS
    for i, line in enumerate(_lines(requests)):
        if line["outcome"] == "ok" and line.get("output_tokens"):
            at = min(int((line["ended"] - start) / span * TIME_BINS), TIME_BINS - 1)
            tokens[at] += int(line["output_tokens"])
        if i % stride == 0 and line["node"] in shown:
            bars[line["node"]].append(
                {
                    "x": (line["started"] - start) / span,
                    "w": max((line["ended"] - line["started"]) / span, 0.0005),
                    "started": line["started"],
                    "ended": line["ended"],
                    "item": line["item"],
                    "outcome": line["outcome"],
                    "colour": COLOURS.get(line["outcome"], FAILURE_COLOUR),
                    "seconds": line["ended"] - line["started"],
                }
            )
    timeline = [{"node": name, "lanes": _lanes(bars[name]), "bars": bars[name]} for name in rows]
    errors: Counter[str] = Counter()
    for record in _lines(results):
        if record.get("status") == "failed":
            cause = str(record.get("error", ""))[:160]
            if cause in errors or len(errors) < MAX_CAUSES:
                errors[cause] += 1
            else:
                errors["(other errors)"] += 1
    bin_s = span / TIME_BINS
    throughput = [n / bin_s for n in tokens]
    latency = []
    for name in sorted(nodes):
        counts = nodes[name].latencies
        peak = max(counts) or 1
        latency.append(
            {
                "node": name,
                "answers": sum(counts),
                "p50": _quantile(counts, 0.5),
                "p95": _quantile(counts, 0.95),
                "bins": [n / peak for n in counts],
            }
        )
    return {
        "report": report,
        "requests": count,
        "span_s": span if count else 0.0,
        "stride": stride,
        "rows_hidden": max(len(nodes) - len(rows), 0),
        "timeline": timeline,
        "throughput": throughput,
        "throughput_peak": max(throughput, default=0.0) or 1.0,
        "bin_s": bin_s,
        "latency": latency,
        "latency_edges": LATENCY_EDGES,
        "outcomes": sorted(outcomes.items(), key=lambda kv: -kv[1]),
        "errors": errors.most_common(20),
        "colours": {**COLOURS, "failure": FAILURE_COLOUR},
        "cost": cost_rows(report),
        "estimate": estimate_rows(report),
    }


def money(value: float | None) -> str:
    """A cost as the page shows it (:func:`~runner._report.show_cost`; empty for none)."""
    return show_cost(value, none="")


def cost_rows(report: RunReport) -> list[dict[str, str]]:
    """The cost table's rows, formatted: each priced node, then the run's (``[]``: no node
    has a price, and the page shows no cost)."""
    totals = report.totals
    if totals.cost is None:
        return []
    rows = [
        {
            "node": name,
            "price_per_hour": money(line.price_per_hour),
            "cost": money(line.cost),
            "per_1m": money(line.cost_per_1m_output_tokens),
        }
        for name, line in report.nodes.items()
        if line.price_per_hour is not None
    ]
    rows.append(
        {
            "node": "run",
            "price_per_hour": money(sum(row.price_per_hour or 0 for row in report.nodes.values())),
            "cost": money(totals.cost),
            "per_1m": money(totals.cost_per_1m_output_tokens),
        }
    )
    return rows


def write_report_page(run_dir: Path, report: RunReport) -> Path:
    """Write ``report.html`` into the run directory (atomically) and return its path."""
    env = Environment(
        loader=PackageLoader("runner", "templates"), autoescape=select_autoescape(["html"])
    )
    page = env.get_template("report.html").render(
        page_context(report, run_dir / "requests.jsonl", run_dir / "results.jsonl")
    )
    path = run_dir / "report.html"
    with replace_file(path) as out:
        out.write(page)
    return path


def estimate_rows(report: RunReport) -> list[dict[str, str]]:
    """The pre-flight's estimate beside what the run did (``[]``: no estimate was made):
    what was measured, the estimate (an upper bound where it says "at most") and the run's
    figure."""
    found = report.estimate
    if found is None:
        return []
    totals = report.totals

    def number(value: float | None, unit: str = "") -> str:
        return "" if value is None else f"{value:,.0f}{unit}"

    rows = [
        {"what": "items sent", "estimate": number(found.items),
         "actual": number(totals.items - totals.reused)},
        {"what": "prompt tokens", "estimate": (f"about {number(found.prompt_tokens)} (from a "
         f"sample of {found.sampled:,})" if found.sampled else number(found.prompt_tokens))
         or f"not counted: {found.not_counted}", "actual": ""},
        {"what": "output tokens", "estimate": f"at most {number(found.output_tokens_max)}",
         "actual": number(totals.output_tokens)},
        {"what": "time", "estimate": "" if found.seconds_max is None
         else f"at most {number(found.seconds_max, ' s')}",
         "actual": number(report.wall_time_s, " s")},
    ]  # fmt: skip
    if found.cost_max is not None or totals.cost is not None:
        rows.append(
            {
                "what": "cost",
                "estimate": "" if found.cost_max is None else f"at most {money(found.cost_max)}",
                "actual": money(totals.cost),
            }
        )
    if found.too_long:
        rows.append({"what": "prompts too long for the context", "estimate": number(found.too_long),
                     "actual": ""})  # fmt: skip
    return rows
