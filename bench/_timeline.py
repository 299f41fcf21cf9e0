"""Timeline pictures: one row per node, one bar per request, coloured by outcome.

Drawn from the nodes' own request logs, so they show what each node did whichever
strategy (or proxy) sent the work. A request occupies a lane of its node's row from the
moment it got a slot to its end; concurrent requests get separate lanes. A request that
never got a slot (its client gave up while it was queued) is a tick where it ended; one
read by a hung node is a bar from its arrival. matplotlib is imported only here (the
``bench`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._behaviour import LogEntry

COLOURS = {
    "ok": "#4c9a2a",
    "error": "#f28e2b",
    "malformed": "#9c5fb5",
    "died": "#d62728",
    "hung": "#7f2704",
    "stalled": "#b07aa1",
    "cancelled": "#a0a0a0",
    "bad_request": "#000000",
}

LABELS = {"cancelled": "cancelled (client gave up)", "error": "error status"}


@dataclass(frozen=True)
class Panel:
    """One strategy's run: a title, the nodes in row order, the log, and marks."""

    title: str
    nodes: Sequence[str]
    log: Sequence[LogEntry]
    marks: Sequence[tuple[float, str]] = ()


def lanes(entries: Sequence[LogEntry]) -> list[int]:
    """A lane per entry so that no two entries in one lane overlap (greedy, by start)."""
    order = sorted(range(len(entries)), key=lambda i: _span(entries[i])[0])
    free_at: list[float] = []
    lane = [0] * len(entries)
    for i in order:
        start, end = _span(entries[i])
        for k, busy_until in enumerate(free_at):
            if busy_until <= start:
                free_at[k] = end
                lane[i] = k
                break
        else:
            lane[i] = len(free_at)
            free_at.append(end)
    return lane


def _span(entry: LogEntry) -> tuple[float, float]:
    start = entry.served if entry.served is not None else entry.start
    return start, max(entry.end, start)


def draw(panels: Sequence[Panel], path: Path) -> None:
    """Draw ``panels`` one above the other into the PNG at ``path``."""
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    horizon = max((e.end for p in panels for e in p.log), default=1.0)
    fig = Figure(figsize=(11, 3.2 * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
    seen: set[str] = set()
    for ax, panel in zip(axes, panels, strict=True):
        for row, node in enumerate(panel.nodes):
            mine = [e for e in panel.log if e.node == node]
            entries = [e for e in mine if e.served is not None or e.outcome == "hung"]
            queued = [e.end for e in mine if e.served is None and e.outcome != "hung"]
            if queued:  # requests that never got a slot: a tick where they ended
                seen.add("gave up in queue")
                ax.plot(queued, [row + 0.45] * len(queued), "|", color="#555555", markersize=4)
            lane_of = lanes(entries)
            height = 0.8 / max(1, max(lane_of, default=0) + 1)
            by_outcome: dict[str, list[tuple[int, float, float]]] = {}
            for entry, lane in zip(entries, lane_of, strict=True):
                start, end = _span(entry)
                by_outcome.setdefault(entry.outcome, []).append((lane, start, end - start))
            for outcome, bars in by_outcome.items():
                seen.add(outcome)
                for lane, start, width in bars:
                    ax.broken_barh(
                        [(start, max(width, horizon / 2000))],
                        (row - 0.4 + lane * height, height * 0.9),
                        facecolors=COLOURS.get(outcome, "#333333"),
                        linewidth=0,
                    )
        for at, label in panel.marks:
            ax.axvline(at, color="#333333", linestyle="--", linewidth=1)
            ax.text(at, len(panel.nodes) - 0.45, f" {label}", fontsize=8, va="bottom")
        ax.set_yticks(range(len(panel.nodes)), list(panel.nodes))
        ax.set_ylim(-0.6, len(panel.nodes) - 0.2)
        ax.invert_yaxis()
        ax.set_title(panel.title, fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("simulated seconds since the first request")
    handles: list[Artist] = [
        Patch(color=COLOURS[o], label=LABELS.get(o, o)) for o in COLOURS if o in seen
    ]
    if "gave up in queue" in seen:
        handles.append(
            Line2D([], [], color="#555555", marker="|", linestyle="", label="gave up in queue")
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
