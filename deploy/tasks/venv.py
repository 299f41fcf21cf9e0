"""Install the open node into a venv on the host, from a wheelhouse built on the controller.

Everything the node runs is in that venv: its packages come from the uploaded wheels only
(``pip install --no-index`` with the venv's own pip), llama.cpp among them as the prebuilt
xllamacpp wheel. Nothing is compiled and no system-wide pip is used on the host.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, pip

from ..facts import PythonVersion
from ..operations import health, wheelhouse
from ..settings import NodeSettings
from ..wheelhouse import WheelhouseError, read_wheelhouse

ENGINE_LIBRARY = "xllamacpp/xllamacpp.abi3.so"
"""llama.cpp as the node loads it, inside the venv's site-packages (checked with ``ldd``)."""


@deploy("Install the open node")
def open_node(s: NodeSettings) -> OperationMeta:
    """Upload the wheelhouse and fill the venv from it; returns the install operation."""
    assert s.wheelhouse is not None
    try:
        built = read_wheelhouse(s.wheelhouse)
    except WheelhouseError as exc:
        raise DeployError(f"{host.name}: wheelhouse: {exc}") from None
    python = host.get_fact(PythonVersion, python=s.python)
    if python is not None and python != built.python:
        raise DeployError(
            f"{host.name}: {s.python} is Python {python} but the wheelhouse is for Python "
            f"{built.python}: build it with Python {python}, or set node_python"
        )
    files.sync(
        name=f"Upload the wheelhouse ({len(built.wheels)} wheels)",
        src=str(built.path.resolve()),
        dest=str(s.wheelhouse_dir),
        delete=True,
        mode="644",
        dir_mode="755",
    )
    pip.venv(name=f"Create the venv {s.venv}", path=str(s.venv), python=s.python)
    installed = wheelhouse.install(
        name="Install the wheels into the venv (prebuilt, no index, no compiler)",
        venv=str(s.venv),
        wheelhouse=str(s.wheelhouse_dir),
        digest=built.digest,
    )
    site = s.venv / "lib" / f"python{built.python}" / "site-packages"
    health.libraries_present(
        name="Check llama.cpp (xllamacpp) finds its shared libraries",
        binary=str(site / ENGINE_LIBRARY),
    )
    return installed
