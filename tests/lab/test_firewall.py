"""Only allowed clients reach a node's port; the controller can, another lab host cannot."""

from __future__ import annotations

from ._lab import HOSTS, Lab
from .conftest import OpenNodes


def test_a_client_that_is_not_allowed_cannot_connect(lab: Lab, open_nodes: OpenNodes) -> None:
    url = f"http://{HOSTS['lab-h1']}:8088/health"
    denied = lab.in_host_ns("lab-h3", "curl", "-sS", "-m", "5", url, check=False, timeout=20)
    assert denied.returncode == 7, denied.stderr  # refused at once (a TCP reset), no timeout
    allowed = lab.in_ctl("curl", "-sS", "-f", "-m", "5", url, check=False, timeout=20)
    assert allowed.returncode == 0, allowed.stderr


def test_other_ports_are_untouched(lab: Lab, open_nodes: OpenNodes) -> None:
    """The host that may not use the node still reaches its SSH port: only one port is filtered."""
    banner = lab.in_host_ns(
        "lab-h3",
        "timeout",
        "5",
        "bash",
        "-c",
        f"exec 3<>/dev/tcp/{HOSTS['lab-h1']}/22 && head -c 4 <&3",
        check=False,
        timeout=20,
    )
    assert banner.stdout == "SSH-", banner.stderr
