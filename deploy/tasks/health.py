"""Check that the node answers after the deploy, or fail the host with its log."""

from __future__ import annotations

from pyinfra.api import deploy

from ..operations import health
from ..settings import NodeSettings


@deploy("Check the node")
def verify(s: NodeSettings, *, process_check: str) -> None:
    """Process up, port listening, and a one-token completion from the host itself."""
    health.node_answers(
        name=f"The node answers a one-token completion on port {s.port}",
        process_check=process_check,
        address=s.client_address,
        port=s.port,
        engine=s.model_name,
        logs=[str(s.console_log), str(s.log_path)],
        wait=s.verify_timeout,
    )
