"""How a run ended: its exit status and a one-line summary (printed after a sweep)."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0  # every item succeeded (probe: every node answered)
EXIT_FAILED_ITEMS = 1  # some items failed or were left unfinished
EXIT_CONFIG = 2  # configuration or usage error; nothing was sent
EXIT_UNAVAILABLE = 3  # no node could serve; the run stopped, results so far are kept
EXIT_INTERNAL = 4  # a bug: an unexpected exception
EXIT_STORAGE = 5  # a file the run writes could not be written (read-only, full disk)
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (Slurm, Kubernetes, systemd): handled as Ctrl-C


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    summary: str
