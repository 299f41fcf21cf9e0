"""Artifacts a node needs (the ts_server tarball, a model file): where they come from and how
they are checked. A download needs a sha256 and a size; a controller-side copy is checked
against them when given.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._values import SettingsError, integer, text

TS_SERVER_BASE_URL = "https://bellard.org/ts_server"
MODEL_BASE_URL = "https://huggingface.co/fbellard/ts_server/resolve/main"
MODEL_PAGE_URL = "https://huggingface.co/fbellard/ts_server/blob/main"

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Artifact:
    """A file the node needs, fetched from a URL on the host or uploaded from the controller.

    Attributes:
        label: what it is, for messages ("ts_server tarball").
        key: the prefix of its data keys (``ts_server`` → ts_server_url, ts_server_sha256...).
        filename: its name on the host.
        url: where the host downloads it from (None when uploaded).
        sha256: its checksum (lower-case hex), required for a download.
        size: its size in bytes, required for a download.
        local: a file on the controller to upload instead of downloading (air-gapped hosts).
        headers: HTTP headers for the download (e.g. a token); masked in pyinfra's output.
    """

    label: str
    key: str
    filename: str
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    local: Path | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def artifact_from_data(
    data: Mapping[str, Any], *, key: str, label: str, url: str | None
) -> Artifact:
    """Read one artifact's keys (``<key>_url``, ``_sha256``, ``_size``, ``_local``,
    ``_headers``) from host data.

    Raises:
        SettingsError: a value is malformed, or a download has no sha256 or size (the message
            says where to find them).
    """
    url = data.get(f"{key}_url") or url
    local = data.get(f"{key}_local")
    sha256 = data.get(f"{key}_sha256")
    size = data.get(f"{key}_size")
    if sha256 is not None:
        sha256 = text(sha256, f"{key}_sha256").lower()
        if not _SHA256.fullmatch(sha256):
            raise SettingsError(f"{key}_sha256: {sha256!r} is not 64 hex digits")
    if size is not None:
        size = integer(size, f"{key}_size", 1, 1 << 50)
    headers = data.get(f"{key}_headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise SettingsError(f"{key}_headers: expected a mapping of header name to text")
    if local is not None:
        path = Path(text(local, f"{key}_local")).expanduser()
        if not path.is_file():
            raise SettingsError(f"{key}_local: no such file on this machine: {path}")
        return Artifact(label, key, path.name, None, sha256, size, path, headers)
    if not url:
        raise SettingsError(f"{key}_url: not set (or give {key}_local, a file on this machine)")
    url = text(url, f"{key}_url")
    if not url.startswith(("https://", "http://")):
        raise SettingsError(f"{key}_url: {url!r} is not an http(s) URL")
    if sha256 is None or size is None:
        missing = " and ".join(
            k for k, v in ((f"{key}_sha256", sha256), (f"{key}_size", size)) if v is None
        )
        raise SettingsError(
            f"refusing to download the {label} {url.rsplit('/', 1)[-1]} without a checksum: "
            f"set {missing} in the inventory's group data ({where_to_find(key, url)}), "
            f"or upload a copy you trust with {key}_local"
        )
    filename = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return Artifact(label, key, filename, url, sha256, size, None, headers)


def where_to_find(key: str, url: str) -> str:
    if key == "ts_server":
        folder = url.split("?", 1)[0].rsplit("/", 1)[0]
        return (
            f"the sha256 is in {folder}/sha256.txt beside the tarball; the size in bytes is the "
            f"download's Content-Length: curl -sIL {url}"
        )
    name = url.split("?", 1)[0].rsplit("/", 1)[-1]
    if url.startswith(MODEL_BASE_URL):
        return f"the model's page {MODEL_PAGE_URL}/{name} shows its SHA256 and size in bytes"
    return f"sha256sum {name} and stat -c %s {name} on a copy you trust"


@lru_cache(maxsize=32)
def local_digest(path: Path, size: int, mtime_ns: int) -> str:
    """The sha256 of a file on the controller (cached while its size and mtime hold)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_local_artifact(artifact: Artifact) -> str:
    """Check an artifact's controller-side file against its checksum and size, if given.

    Returns:
        The file's sha256.

    Raises:
        SettingsError: the file is missing or does not match.
    """
    assert artifact.local is not None
    path = artifact.local
    try:
        stat = path.stat()
    except OSError as exc:
        raise SettingsError(f"{artifact.key}_local: cannot read {path}: {exc.strerror}") from exc
    if artifact.size is not None and stat.st_size != artifact.size:
        raise SettingsError(
            f"{artifact.key}_local: {path} has {stat.st_size} bytes, "
            f"{artifact.key}_size says {artifact.size}"
        )
    digest = local_digest(path, stat.st_size, stat.st_mtime_ns)
    if artifact.sha256 is not None and digest != artifact.sha256:
        raise SettingsError(
            f"{artifact.key}_local: {path} has sha256 {digest}, "
            f"{artifact.key}_sha256 says {artifact.sha256}"
        )
    return digest
