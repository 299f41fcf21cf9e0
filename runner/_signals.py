"""SIGTERM handled as Ctrl-C: what Slurm, Kubernetes and systemd send to stop a job.

While :func:`sigterm_as_ctrl_c` is active, SIGTERM takes the path of Ctrl-C: it is handed to
whatever handles SIGINT at that moment (Python's default, which raises ``KeyboardInterrupt``;
inside ``trio.run`` trio's handler, which delivers it safely to the main task). So a SIGTERM
cancels the requests in flight, flushes the journal, writes ``report.json`` and stops local
nodes exactly as Ctrl-C does; only the exit status differs (143, the shell's 128 + 15, against
130 for Ctrl-C), read from the :class:`StopSignal` the handler fills in.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from ._outcome import EXIT_INTERRUPTED, EXIT_TERMINATED


@dataclass
class StopSignal:
    """What asked the run to stop: SIGTERM once it arrived, else Ctrl-C (SIGINT)."""

    sigterm: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.sigterm else EXIT_INTERRUPTED

    @property
    def what(self) -> str:
        """``interrupted (Ctrl-C)`` or ``terminated (SIGTERM)``."""
        return "terminated (SIGTERM)" if self.sigterm else "interrupted (Ctrl-C)"

    @property
    def headline(self) -> str:
        """``Interrupted`` or ``Terminated (SIGTERM)``: how the run's last message starts."""
        return "Terminated (SIGTERM)" if self.sigterm else "Interrupted"


@contextmanager
def sigterm_as_ctrl_c(stop: StopSignal) -> Iterator[StopSignal]:
    """Handle SIGTERM as Ctrl-C until the block ends, noting it in ``stop``."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.sigterm = True
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:  # SIGINT ignored (a job started in the background): stop anyway
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
