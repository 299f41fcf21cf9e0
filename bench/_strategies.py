"""The strategies the harness knows, by name."""

from __future__ import annotations

from ._engine_adapter import (
    engine_adaptive,
    engine_nohedge,
    engine_nostream,
    engine_with_slots,
    run_engine_strategy,
)
from ._memory import RUNNER
from ._minimal import minimal, minimal_stream
from ._nginx import nginx
from ._roundrobin import roundrobin
from ._scenarios import Scenario
from ._strategy import Strategy

STRATEGIES: dict[str, Strategy] = {
    "roundrobin": roundrobin,
    "nginx": nginx,
    "minimal": minimal,
    "minimal_stream": minimal_stream,
    "engine": run_engine_strategy,
    "engine_nohedge": engine_nohedge,
    "engine_adaptive": engine_adaptive,
    "engine_nostream": engine_nostream,
}


def strategies_for(scenario: Scenario) -> dict[str, Strategy]:
    """Every strategy that can run ``scenario``: the registered ones and its fixed-slot
    engine variants (``engine_<name>`` for each of ``scenario.fixed``)."""
    known = dict(STRATEGIES)
    if scenario.kind == "memory":
        known[RUNNER] = whole_runner
    for name, slots in scenario.fixed.items():
        known[f"engine_{name}"] = engine_with_slots(slots)
    return known


async def whole_runner(*args: object, **kwargs: object) -> None:
    """``runner`` in the memory scenario: the whole ``python -m runner`` in a child process
    (:mod:`bench._memory_runner`); it is not a strategy the other scenarios can run."""
    raise NotImplementedError("the whole runner is measured in the memory scenario only")
