"""The current host's settings, or a one-line deploy error naming the host and the key."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from ..settings import NodeSettings, Role, SettingsError, node_settings


def for_host(role: Role) -> NodeSettings:
    """Read the current host's data as settings for ``role``.

    Raises:
        DeployError: the data cannot make a deploy (pyinfra prints the message, no traceback).
    """
    try:
        return node_settings(host.data.dict(), role=role)
    except SettingsError as exc:
        raise DeployError(f"{host.name}: {exc}") from None
