"""Only allowed clients reach the node's port (iptables); the host itself always can."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError

from ..facts import SshClientAddress
from ..operations import firewall
from ..settings import NodeSettings


def allowed_sources(s: NodeSettings) -> list[str]:
    """``allowed_clients``, or the controller's address as the host sees it."""
    if s.allowed_clients is not None:
        return list(s.allowed_clients)
    address = host.get_fact(SshClientAddress, _sudo=False)
    if not address:
        raise DeployError(
            f"{host.name}: cannot tell the controller's address ($SSH_CONNECTION is empty): "
            "set allowed_clients in the inventory"
        )
    return [f"{address}/32"]


@deploy("Firewall the node's port")
def restrict(s: NodeSettings, sources: list[str]) -> None:
    """Let only ``sources`` connect to the node's port."""
    firewall.allow_only(
        name=f"Only {', '.join(sources)} may connect to port {s.port}",
        port=s.port,
        sources=sources,
        chain=s.firewall_chain,
    )
