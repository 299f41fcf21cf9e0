"""``python -m bench <scenario|all> [--runs N] [--strategies a,b] ...``: run benchmarks.

Prints a table of medians per strategy, writes ``bench/results/<scenario>.json`` and, for
``heterogeneous`` and ``node_death``, a timeline picture to ``docs/img/``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path

import trio

from ._harness import run_scenario
from ._outcomes import RunResult
from ._report import print_table, results_json, write_json
from ._scenarios import SCENARIOS, Scenario
from ._strategies import STRATEGIES, strategies_for
from ._strategy import Strategy

_ROOT = Path(__file__).resolve().parent.parent
TIMELINE_SCENARIOS = ("heterogeneous", "node_death")
TIMELINE_STRATEGIES = ("engine", "roundrobin")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("scenario", choices=[*SCENARIOS, "all"])
    p.add_argument("--runs", type=int, default=3, help="runs per strategy (default 3)")
    p.add_argument(
        "--strategies",
        help=f"comma-separated, from {', '.join(STRATEGIES)} and a scenario's engine_fixed_* "
        "(default: the scenario's own list, see docs/benchmarks.md)",
    )
    p.add_argument("--items", type=int, help="items per run (memory: the large input)")
    p.add_argument("--time-scale", type=float, help="real seconds per simulated second")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-run-seconds", type=float, default=900.0)
    p.add_argument("--results-dir", type=Path, default=_ROOT / "bench" / "results")
    p.add_argument("--img-dir", type=Path, default=_ROOT / "docs" / "img")
    p.add_argument("--no-timeline", action="store_true")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.runs < 1:
        sys.exit("--runs: must be ≥ 1")
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for name in scenarios:
        options: dict[str, object] = {"seed": args.seed}
        if args.items is not None:
            options["items"] = args.items
        if args.time_scale is not None:
            options["time_scale"] = args.time_scale
        scenario = SCENARIOS[name](**options)
        known = strategies_for(scenario)
        names = (
            [s.strip() for s in args.strategies.split(",") if s.strip()]
            if args.strategies
            else list(scenario.strategies)
        )
        unknown = [n for n in names if n not in known]
        if unknown:
            sys.exit(f"--strategies: unknown {', '.join(unknown)} (known: {', '.join(known)})")
        strategies = {n: known[n] for n in names}
        results = trio.run(_run, scenario, strategies, args)
        print_table(scenario, results)
        path = args.results_dir / f"{scenario.name}.json"
        write_json(path, results_json(scenario, results, runs=args.runs))
        print(f"results: {path}")
        if name in TIMELINE_SCENARIOS and not args.no_timeline:
            picture = timeline(scenario, results, args.img_dir)
            if picture is not None:
                print(f"timeline: {picture}")


async def _run(
    scenario: Scenario, strategies: Mapping[str, Strategy], args: argparse.Namespace
) -> list[RunResult]:
    return await run_scenario(
        scenario,
        strategies,
        runs=args.runs,
        max_run_seconds=args.max_run_seconds,
        progress=lambda line: print(line, flush=True),
    )


def timeline(scenario: Scenario, results: list[RunResult], img_dir: Path) -> Path | None:
    """Draw the median run of each timeline strategy; ``None`` without matplotlib."""
    try:
        from ._timeline import Panel, draw
    except ImportError:
        return None
    panels = []
    for strategy in TIMELINE_STRATEGIES:
        runs = [r for r in results if r.strategy == strategy and r.ratio is not None]
        if not runs:
            continue
        middle = statistics.median_low(r.ratio for r in runs if r.ratio is not None)
        run = next(r for r in runs if r.ratio == middle)
        title = (
            f"{strategy}: makespan {run.makespan:.0f} s = {run.ratio:.2f} x lower bound"
            f" ({run.ok} ok, {run.failed} failed of {run.items})"
        )
        nodes = [n.name for n in scenario.nodes]
        panels.append(Panel(title, nodes, run.node_log, scenario.events))
    if not panels:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    path = img_dir / f"{scenario.name}_timeline.png"
    draw(panels, path)
    return path


if __name__ == "__main__":
    main()
