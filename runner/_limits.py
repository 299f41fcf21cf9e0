"""The process limits a wide cluster needs: one file descriptor per connection.

The engine keeps up to ``slots + 1`` connections open per node (one per worker and one for
probes), so 1,000 nodes × 4 slots need about 5,000 descriptors, where many systems give a
process 1,024 by default. :func:`ensure_descriptors` raises the soft limit towards the hard
one when the cluster needs more, and says so; when even the hard limit is too low it warns
with the command that fixes it (the run goes on: connections beyond the limit fail as
node errors and are retried elsewhere, nothing is lost).
"""

from __future__ import annotations

import logging

log = logging.getLogger("runner")

HEADROOM = 256  # descriptors for journals, logs, the local nodes' pipes and the like


def descriptors_needed(connections: int) -> int:
    """Descriptors a run with ``connections`` connections open at once needs."""
    return connections + HEADROOM


def ensure_descriptors(connections: int) -> int:
    """Make room for ``connections`` open connections; returns the soft limit now in force
    (``-1`` where the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return -1
    needed = descriptors_needed(connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
        else:
            log.info("open files limit raised from %d to %d for %d connections",
                     soft, target, connections)  # fmt: skip
    if target < needed:
        log.warning(
            "this cluster may hold %d connections but the open files limit is %d: "
            "raise it (ulimit -n %d) or fewer connections will be open than slots",
            connections, target, needed,
        )  # fmt: skip
    return target
