"""An allow-list in front of one TCP port (iptables; works inside network namespaces too).

INPUT sends the port to a chain of its own: loopback and the allowed networks are accepted,
anything else gets a TCP reset (clients fail at once rather than time out). The chain is
replaced in one ``iptables-restore --noflush`` transaction, so the port is never open while it
changes. :func:`restore_script` is also rendered into the script a systemd unit runs before
start, so the rules come back after a reboot.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from ..facts import FirewallChain

ANYWHERE = "0.0.0.0/0"


def allowlist_rules(chain: str, sources: Sequence[str]) -> list[str]:
    """The chain's rules, written as ``iptables -S`` prints them.

    Args:
        chain: the chain's name.
        sources: IPv4 networks in canonical form (``10.0.0.1/32``); ``0.0.0.0/0`` allows all.
    """
    rules = [f"-A {chain} -i lo -j ACCEPT"]
    for source in sources:
        rules.append(
            f"-A {chain} -j ACCEPT" if source == ANYWHERE else f"-A {chain} -s {source} -j ACCEPT"
        )
    rules.append(f"-A {chain} -p tcp -j REJECT --reject-with tcp-reset")
    return rules


def hook_rule(chain: str, port: int) -> str:
    return f"-I INPUT -p tcp -m tcp --dport {port} -j {chain}"


def restore_lines(chain: str, port: int, sources: Sequence[str], *, hook: bool) -> list[str]:
    """The ``iptables-restore --noflush`` input that (re)writes the chain, and hooks it."""
    lines = ["*filter", f":{chain} - [0:0]", f"-F {chain}", *allowlist_rules(chain, sources)]
    if hook:
        lines.append(hook_rule(chain, port))
    return [*lines, "COMMIT"]


def restore_command(lines: Sequence[str]) -> StringCommand:
    return StringCommand(
        "printf",
        "'%s\\n'",
        *(QuoteString(line) for line in lines),
        "| iptables-restore -w --noflush",
    )


def restore_script(chain: str, port: int, sources: Sequence[str]) -> str:
    """A shell script that applies the allow-list and hooks it once (for ExecStartPre)."""
    check = f"iptables -w -C INPUT -p tcp --dport {port} -j {chain} 2>/dev/null"
    rewrite = str(restore_command(restore_lines(chain, port, sources, hook=False)))
    hook = str(restore_command(["*filter", hook_rule(chain, port), "COMMIT"]))
    return f"{rewrite}\n{check} || {hook}\n"


@operation()
def allow_only(port: int, sources: list[str], chain: str) -> Generator[StringCommand, None, None]:
    """Let only ``sources`` (and the host itself) connect to a TCP port.

    + port: the TCP port
    + sources: IPv4 networks in canonical form (``10.0.0.1/32``); ``0.0.0.0/0`` allows all
    + chain: the iptables chain to hold the rules
    """
    info = host.get_fact(FirewallChain, chain=chain, port=port) or {}
    want = allowlist_rules(chain, sources)
    rules_ok = bool(info.get("exists")) and info.get("rules") == want
    hooked = bool(info.get("hooked"))
    if rules_ok and hooked:
        host.noop(f"port {port} accepts only {', '.join(sources)}")
        return
    if rules_ok:
        yield restore_command(["*filter", hook_rule(chain, port), "COMMIT"])
    else:
        yield restore_command(restore_lines(chain, port, sources, hook=not hooked))
