"""A long-running process on a host without systemd.

``start-stop-daemon`` starts a small supervisor script in the background with a pidfile; the
script (``templates/supervise.sh.j2``) runs the node, and starts it again when it exits, until
the supervisor is stopped (TERM stops the node too).
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from ..facts import PidfileProcess


def start_command(pidfile: str, script: str, *, chdir: str, user: str | None) -> StringCommand:
    as_user = ["--chuid", QuoteString(user)] if user and user != "root" else []
    return StringCommand(
        "start-stop-daemon",
        "--start",
        "--oknodo",
        "--background",
        "--make-pidfile",
        "--pidfile",
        QuoteString(pidfile),
        "--chdir",
        QuoteString(chdir),
        *as_user,
        "--startas",
        QuoteString(script),
    )


def stop_command(pidfile: str) -> StringCommand:
    return StringCommand(
        "start-stop-daemon",
        "--stop",
        "--oknodo",
        "--remove-pidfile",
        "--retry",
        "TERM/30/KILL/5",
        "--pidfile",
        QuoteString(pidfile),
    )


@operation()
def service(
    pidfile: str,
    script: str,
    chdir: str,
    user: str | None = None,
    running: bool = True,
    restarted: bool = False,
) -> Generator[StringCommand, None, None]:
    """Start, stop or restart a supervised process.

    + pidfile: the supervisor's pidfile
    + script: the supervisor script (started as ``user``)
    + chdir: its working directory
    + user: who it runs as (None or "root": root)
    + running: whether it should run
    + restarted: stop it first if it runs (starts it if it does not)
    """
    pid = host.get_fact(PidfileProcess, pidfile=pidfile)
    if not running:
        if pid is None:
            host.noop(f"{script} is not running")
        else:
            yield stop_command(pidfile)
        return
    if pid is not None and not restarted:
        host.noop(f"{script} is running (pid {pid})")
        return
    if pid is not None:
        yield stop_command(pidfile)
    yield start_command(pidfile, script, chdir=chdir, user=user)
