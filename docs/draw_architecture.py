"""``python docs/draw_architecture.py``: draw docs/img/architecture.png from the code.

Each module of ``runner/`` is placed in the stage of the run it belongs to (``STAGES``, the
one hand-written part: a module missing from it, or named there but gone, is an error, so
the picture cannot drift from the tree). The arrows are the modules' own imports between
stages, read with ``ast``; imports within a stage, and of the two modules every stage uses
(``_errors`` and the config schema: ``_config``, ``_choices``, ``_cluster_schema``,
``_job_schema``), are left out to keep the
picture legible.
The stages run left to right in the order a run goes through them.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "runner"
OUT = ROOT / "docs" / "img" / "architecture.png"

EVERYWHERE = ("_errors", "_config", "_choices", "_cluster_schema", "_job_schema")
"""Modules every stage imports: their arrows are not drawn."""

STAGES: dict[str, tuple[str, ...]] = {
    "entry": ("__main__", "_run", "_help", "_signals", "_limits", "_outcome", "merge"),
    "config": (
        "_config",
        "_choices",
        "_cluster_schema",
        "_job_schema",
        "_checks",
        "_paths",
        "_errors",
    ),
    "plan": (
        "_plan",
        "_inputs",
        "_templates",
        "_sampling",
        "_request",
        "_repeats",
        "_shard",
        "_batch",
    ),
    "cluster": (
        "_cluster",
        "_inventory",
        "_local",
        "_node_process",
        "_node_watch",
        "_probe",
        "_nodes",
        "_preflight",
        "_estimate",
        "_chat_framing",
        "_dry_run",
    ),
    "engine": (
        "_engine",
        "_dispatch",
        "_policy",
        "_health",
        "_hedging",
        "_tail",
        "_adaptive",
        "_work",
    ),
    "wire": ("_client", "_connection", "_textsynth", "_openai", "_wire"),
    "answers": ("_acceptance", "_jsonladder", "_schema_refs", "_choice"),
    "sink": (
        "_sink",
        "_records",
        "_journal",
        "_resume_index",
        "_lock",
        "_output",
        "_table",
        "_run_dir",
        "_report",
        "_files",
        "_progress",
        "_report_page",
        "_merge",
        "_batch_output",
    ),
}
"""The run's stages, in order, and the modules of each (``runner/<name>.py``)."""


def modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def imports(module: str) -> set[str]:
    """The ``runner`` modules that ``module`` imports (relative imports, one level)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found & modules()


def check() -> dict[str, str]:
    """Module → stage, after checking that ``STAGES`` names every module exactly once."""
    stage_of = {m: stage for stage, names in STAGES.items() for m in names}
    counts = Counter(m for names in STAGES.values() for m in names)
    twice = sorted(m for m, n in counts.items() if n > 1)
    missing = sorted(modules() - set(stage_of))
    gone = sorted(set(stage_of) - modules())
    if twice or missing or gone:
        raise SystemExit(f"STAGES is out of date: twice {twice}, missing {missing}, gone {gone}")
    return stage_of


def draw() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stage_of = check()
    order = list(STAGES)
    place: dict[str, tuple[float, float]] = {}
    for x, stage in enumerate(order):
        for y, module in enumerate(STAGES[stage]):
            place[module] = (x * 2.2, -y * 0.9)
    fig, ax = plt.subplots(figsize=(17, 7.5))
    ax.set_axis_off()
    edges = {
        (m, t)
        for m in stage_of
        for t in imports(m)
        if stage_of[t] != stage_of[m] and t not in EVERYWHERE
    }
    for source, target in sorted(edges):
        (x0, y0), (x1, y1) = place[source], place[target]
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={"arrowstyle": "->", "color": "#9aa5b1", "lw": 0.6, "alpha": 0.55},
        )
    for x, stage in enumerate(order):
        ax.text(x * 2.2, 1.0, stage, ha="center", fontsize=13, weight="bold", color="#1f3b57")
        if x + 1 < len(order):
            ax.annotate(
                "",
                xy=((x + 1) * 2.2 - 0.75, 1.05),
                xytext=(x * 2.2 + 0.75, 1.05),
                arrowprops={"arrowstyle": "-|>", "color": "#1f3b57", "lw": 1.5},
            )
    for module, (x, y) in place.items():
        lines = sum(1 for _ in (PACKAGE / f"{module}.py").open(encoding="utf-8"))
        ax.text(
            x,
            y,
            f"{module if module.startswith('__') else module[1:]}\n{lines} lines",
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={"boxstyle": "round", "fc": "#eef3f8", "ec": "#1f3b57", "lw": 0.8},
        )
    ax.set_title(
        "runner/: the stages of a run, left to right, and the imports between stages "
        f"({len(edges)} arrows; errors and config, used by all, not drawn; "
        "runner/node/, the open node, apart)",
        fontsize=11,
    )
    ax.set_xlim(-1.0, (len(order) - 1) * 2.2 + 1.0)
    ax.set_ylim(-6.0, 1.5)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(place)} modules, {len(edges)} arrows")


if __name__ == "__main__":
    draw()
    sys.exit(0)
