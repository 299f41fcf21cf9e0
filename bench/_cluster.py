"""A simulated cluster: nodes that share one clock and one request log."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import _answers
from ._answers import AnswerHook
from ._behaviour import LogEntry, SimNode
from ._clock import SimClock
from ._spec import SimNodeSpec


class SimCluster:
    """Simulated nodes sharing one clock and one request log.

    Args:
        nodes: the node specs; a spec without ``address`` gets ``127.0.0.1:<30001 + i>``.
        time_scale: real seconds per simulated second.
        answer: the answer-text hook for every node.
        on_log: receives each log entry (in addition to :attr:`log`).
    """

    def __init__(
        self,
        nodes: Sequence[SimNodeSpec],
        *,
        time_scale: float = 1.0,
        answer: AnswerHook = _answers.filler_answer,
        on_log: Callable[[LogEntry], None] | None = None,
    ) -> None:
        self.clock = SimClock(time_scale)
        self.log: list[LogEntry] = []
        self._extra_log = on_log
        self.nodes: dict[str, SimNode] = {}
        for i, spec in enumerate(nodes):
            address = spec.address or f"127.0.0.1:{30001 + i}"
            if address in self.nodes:
                raise ValueError(f"two simulated nodes at {address}")
            self.nodes[address] = SimNode(spec, self.clock, answer=answer, on_log=self._record)

    def _record(self, entry: LogEntry) -> None:
        self.log.append(entry)
        if self._extra_log is not None:
            self._extra_log(entry)

    @property
    def base_urls(self) -> dict[str, str]:
        """``{node name: "http://host:port"}``."""
        return {node.spec.name: f"http://{address}" for address, node in self.nodes.items()}
