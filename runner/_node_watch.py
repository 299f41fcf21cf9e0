"""Watching the local node processes: until they are ready, and while the cluster runs.

:func:`wait_ready` polls every server's readiness URL until each answers 200 from its own
listening socket (:func:`listens_on`: not a stale server still holding the port),
starting a server again on another port if its port was taken meanwhile. :class:`RestartWatch`
is the thread that starts a server again, on the same port, when it dies while the cluster
runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import httpx

from ._node_process import NodeStarter

log = logging.getLogger("runner")

POLL_INTERVAL = 0.1
BIND_ATTEMPTS = 3  # restarts of a node whose port was taken between choosing and binding
WATCH_INTERVAL = 0.5  # seconds between looks at the servers


class RestartWatch:
    """A thread that starts a server again when it dies while the cluster runs, at most
    ``max_restarts`` times per server. It must outlive the servers it started
    (``PR_SET_PDEATHSIG`` follows the starting thread): stop the servers first, then leave."""

    def __init__(
        self,
        starters: list[NodeStarter],
        *,
        max_restarts: int,
        on_restart: Callable[[str, int, str], None] | None,
    ) -> None:
        self.starters = starters
        self.max_restarts = max_restarts
        self.on_restart = on_restart
        self.restarts = {starter.name: 0 for starter in starters}
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-cluster-watch", daemon=True)

    def __enter__(self) -> RestartWatch:
        if self.max_restarts > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self.stopping.wait(WATCH_INTERVAL):
            for starter in self.starters:
                assert starter.process is not None
                code = starter.process.poll()
                if code is None or self.restarts[starter.name] >= self.max_restarts:
                    continue
                if self.stopping.is_set():
                    return
                why = f"exited with status {code}: {starter.log_tail()}"
                try:
                    starter.restart()
                except OSError as exc:
                    why += f"; restart failed: {exc}"
                self.restarts[starter.name] += 1
                count = self.restarts[starter.name]
                log.warning(
                    "local node %s %s; started again on port %d (%d of %d)",
                    starter.name, why, starter.port, count, self.max_restarts,
                )  # fmt: skip
                if self.on_restart is not None:
                    self.on_restart(starter.name, count, why)


def wait_ready(starters: list[NodeStarter], *, api_key: str | None, timeout: float) -> None:
    """Return once every server answers its readiness URL from its own socket.

    Raises:
        ConfigError: a server exited (other than losing its port, retried up to
            ``BIND_ATTEMPTS`` starts) or was not ready within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    pending = list(starters)
    # trust_env=False: a proxy configured in the environment must not see loopback traffic.
    with httpx.Client(timeout=2.0, headers=headers, trust_env=False) as client:
        while pending:
            for starter in list(pending):
                assert starter.process is not None
                code = starter.process.poll()
                if code is not None:
                    if "in use" in starter.log_tail() and starter.attempts < BIND_ATTEMPTS:
                        starter.start()  # its port was taken meanwhile: try another one
                        continue
                    raise starter.failure(f"exited with status {code} while starting")
                try:
                    answer = client.get(f"http://127.0.0.1:{starter.port}{starter.ready_path}")
                except httpx.TransportError:
                    continue
                # A 200 from a stale server that holds the port (a previous node not yet
                # gone) is not this node being ready: the listener must be its own.
                if answer.status_code == 200 and listens_on(starter.process.pid, starter.port):
                    pending.remove(starter)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise pending[0].failure(f"was not ready within {timeout:g} s")
            time.sleep(POLL_INTERVAL)


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` of loopback.

    Linux: the listening socket's inode (``/proc/net/tcp``, ``tcp6``) among the process's
    open file descriptors. Where ``/proc`` cannot tell (another OS), the answer is yes.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address "0100007F:1F90", state 0A = LISTEN, inode in column 10
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    if not Path("/proc/net/tcp").exists():
        return True
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False
