"""Bring ts_server and its model to a host: downloaded and verified, or uploaded."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from ..artifacts import Artifact, check_local_artifact
from ..operations import artifact, health
from ..settings import NodeSettings, SettingsError


def place(item: Artifact, *, dest: str) -> tuple[OperationMeta, str]:
    """Put an artifact at ``dest`` on the host; returns the operation and its sha256."""
    if item.local is not None:
        try:
            digest = check_local_artifact(item)
        except SettingsError as exc:
            raise DeployError(f"{host.name}: {exc}") from None
        op = files.put(
            name=f"Upload the {item.label} {item.filename}",
            src=str(item.local),
            dest=dest,
            mode="644",
        )
        return op, digest
    assert item.url is not None and item.sha256 is not None and item.size is not None
    op = artifact.download(
        name=f"Download the {item.label} {item.filename} ({item.size} bytes, sha256 checked)",
        src=item.url,
        dest=dest,
        sha256=item.sha256,
        size=item.size,
        mode="644",
        headers=dict(item.headers),
    )
    return op, item.sha256


@deploy("Install ts_server")
def ts_server(s: NodeSettings) -> OperationMeta:
    """Fetch and unpack the ts_server release; returns the unpack operation."""
    assert s.ts_server is not None
    _, digest = place(s.ts_server, dest=str(s.downloads / s.ts_server.filename))
    unpacked = artifact.unpack(
        name=f"Unpack {s.ts_server.filename} into {s.release_dir}",
        archive=str(s.downloads / s.ts_server.filename),
        dest=str(s.release_dir),
        sha256=digest,
    )
    health.libraries_present(
        name="Check ts_server finds its shared libraries", binary=str(s.release_dir / "ts_server")
    )
    return unpacked


@deploy("Install the model")
def model(s: NodeSettings) -> OperationMeta:
    """Fetch or upload the model file; returns the operation that placed it."""
    assert s.model is not None
    files.directory(name=f"Create {s.model_path.parent}", path=str(s.model_path.parent), mode="755")
    op, _ = place(s.model, dest=str(s.model_path))
    return op
