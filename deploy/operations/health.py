"""A node must answer after the deploy: process up, port listening, one token generated.

The check is a fact, so a healthy node costs no change. It runs only while pyinfra executes
(before that nothing is installed); a node that does not answer within the wait fails the host
with what was wrong and the last lines of its logs.
"""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host, state
from pyinfra.api import QuoteString, StringCommand, operation

from ..facts import MissingLibraries, NodeCheck


@operation()
def node_answers(
    process_check: str,
    address: str,
    port: int,
    engine: str,
    logs: list[str],
    wait: int = 120,
    tail: int = 20,
) -> Generator[StringCommand, None, None]:
    """Fail the host unless the node answers a one-token completion within ``wait`` seconds.

    + process_check: a shell command that succeeds while the node's process is up
    + address: where the host reaches its own node
    + port: the node's port
    + engine: the engine id (the model's name in ts_server.cfg)
    + logs: log files whose last lines are shown on failure
    + wait: seconds to wait for the first answer
    + tail: log lines to show
    """
    if not state.is_executing:
        host.noop(f"the node is checked once the deploy has run (port {port})")
        return
    check = host.get_fact(
        NodeCheck, process_check=process_check, address=address, port=port, engine=engine, wait=wait
    )
    if check["answered"]:
        host.noop(f"the node answers on port {port}: {check['detail']}")
        return
    yield failure_command(check, port=port, engine=engine, wait=wait, logs=logs, tail=tail)


def failure_command(
    check: dict[str, object], *, port: int, engine: str, wait: int, logs: list[str], tail: int
) -> StringCommand:
    """Print why the node is not serving and the end of its logs, then fail."""
    if not check["process"]:
        reason = "the node process is not running"
    elif not check["listening"]:
        reason = f"nothing listens on port {port} after {wait} s"
    else:
        reason = f"no completion from engine {engine} after {wait} s"
    detail = str(check["detail"] or "")[:300]
    message = f"node check failed: {reason}" + (f" (last error: {detail})" if detail else "")
    bits: list[object] = ["echo", QuoteString(message), ">&2;"]
    for log in logs:
        bits += [
            "echo",
            QuoteString(f"--- last {tail} lines of {log}:"),
            ">&2; tail -n",
            str(tail),
            QuoteString(log),
            ">&2 2>/dev/null;",
        ]
    return StringCommand(*bits, "exit 1")


@operation()
def libraries_present(binary: str) -> Generator[StringCommand, None, None]:
    """Fail the host when ``binary`` needs shared libraries the host does not have.

    + binary: the program to check with ``ldd``
    """
    if not state.is_executing:
        host.noop(f"{binary} is checked once it is installed")
        return
    missing = host.get_fact(MissingLibraries, binary=binary) or []
    if not missing:
        host.noop(f"{binary} finds its shared libraries")
        return
    message = (
        f"{binary} needs {', '.join(missing)}, not found on this host: add the package that "
        f"provides it to apt_packages (apt-file search {missing[0]})"
    )
    yield StringCommand("echo", QuoteString(message), ">&2; exit 1")
