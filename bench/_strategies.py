"""The strategies the harness knows, by name."""

from __future__ import annotations

from ._engine_adapter import engine_adaptive, engine_nohedge, engine_nostream, run_engine_strategy
from ._minimal import minimal, minimal_stream
from ._nginx import nginx
from ._roundrobin import roundrobin
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
