"""Benchmarks of the runner against simulated TextSynth nodes, and its baselines.

``python -m bench <scenario>`` runs a scenario; ``python -m bench.simnode --spec f.json``
serves simulated nodes on 127.0.0.1. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

from ._behaviour import LogEntry
from ._bounds import Bound, lower_bound
from ._cluster import SimCluster
from ._engine_adapter import run_engine_strategy
from ._harness import run_scenario
from ._items import Item
from ._nginx import nginx
from ._process import sim_server
from ._roundrobin import roundrobin
from ._scenarios import SCENARIOS, Scenario
from ._spec import ClusterSpec, ErrorBurst, SimNodeSpec
from ._strategies import STRATEGIES
from ._strategy import Node, Settings, Strategy, Trace
from ._transport import SimTransport

__all__ = [
    "SCENARIOS",
    "STRATEGIES",
    "Bound",
    "ClusterSpec",
    "ErrorBurst",
    "Item",
    "LogEntry",
    "Node",
    "Scenario",
    "Settings",
    "SimCluster",
    "SimNodeSpec",
    "SimTransport",
    "Strategy",
    "Trace",
    "lower_bound",
    "nginx",
    "roundrobin",
    "run_engine_strategy",
    "run_scenario",
    "sim_server",
]
