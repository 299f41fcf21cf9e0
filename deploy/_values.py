"""Checks of single host-data values: each returns the value or raises SettingsError."""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Any

_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]+")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.:=~-]*")


class SettingsError(ValueError):
    """Raised when host data cannot make a deploy: a missing checksum, a wrong type, a typo.

    The message is one line naming the key and what to do.
    """


def text(value: Any, key: str, *, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise SettingsError(f"{key}: expected text, got {value!r}")
    if pattern is not None and not pattern.fullmatch(value):
        raise SettingsError(f"{key}: {value!r} is not allowed here (letters, digits, _ -)")
    return value


def integer(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"{key}: expected a whole number in {low}..{high}, got {value!r}")
    return value


def optional_integer(value: Any, key: str, low: int, high: int) -> int | None:
    return None if value is None else integer(value, key, low, high)


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{key}: expected True or False, got {value!r}")
    return value


def absolute(value: Any, key: str) -> PurePosixPath:
    path = PurePosixPath(text(value, key))
    if not _SAFE_PATH.fullmatch(str(path)) or ".." in path.parts or len(path.parts) < 2:
        raise SettingsError(f"{key}: expected an absolute directory like /opt/ts_server")
    return path


def ipv4(value: Any, key: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text(value, key)))
    except ipaddress.AddressValueError:
        raise SettingsError(f"{key}: {value!r} is not an IPv4 address") from None


def clients(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise SettingsError("allowed_clients: expected a list of IPv4 addresses or networks")
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.IPv4Network(text(item, "allowed_clients"), False)))
        except (ipaddress.AddressValueError, ipaddress.NetmaskValueError):
            raise SettingsError(
                f"allowed_clients: {item!r} is not an IPv4 address or network (like 10.0.0.0/24)"
            ) from None
    return tuple(dict.fromkeys(networks))


def packages(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(
        isinstance(p, str) and _PACKAGE.fullmatch(p) for p in value
    ):
        raise SettingsError(f"apt_packages: expected a list of package names, got {value!r}")
    return tuple(value)
