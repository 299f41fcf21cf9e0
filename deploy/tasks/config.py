"""Write ts_server.cfg (the same file for ts_server and the open node)."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from ..facts import PhysicalCores
from ..settings import NodeSettings

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


@deploy("Configure the node")
def write(s: NodeSettings) -> OperationMeta:
    """Render ts_server.cfg; ``n_threads`` defaults to the host's physical cores.

    The open node's ``n_parallel``, ``n_ctx`` and ``max_queue`` are written only when the host
    data sets them: otherwise the node's own defaults apply (docs/node.md).
    """
    n_threads = s.n_threads or host.get_fact(PhysicalCores)
    summary = f"{s.model_name}, port {s.port}, {n_threads} thread{'' if n_threads == 1 else 's'}"
    if s.n_parallel is not None:
        summary += f", {s.n_parallel} sequence{'' if s.n_parallel == 1 else 's'} at once"
    return files.template(
        name=f"Write {s.cfg_path} ({summary})",
        src=str(TEMPLATES / "ts_server.cfg.j2"),
        dest=str(s.cfg_path),
        user="root",
        group=s.service_user,
        mode="640",
        service_name=s.service_name,
        model_name=s.model_name,
        model_filename=s.model_filename,
        n_threads=n_threads,
        n_parallel=s.n_parallel,
        n_ctx=s.n_ctx,
        max_queue=s.max_queue,
        port=s.port,
        bind_addr=s.bind_addr,
        log_filename=str(s.log_path),
        log_start=s.log_start,
        cfg_extra=dict(s.cfg_extra),
    )
