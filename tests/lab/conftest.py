"""The SSH lab: real deploys over SSH to hosts in network namespaces (needs root).

These tests run pyinfra and the runner as subprocesses inside the lab and must not share a
process with the trio tests, so they are collected only when this folder is named::

    python -m pytest -p no:cacheprovider -o addopts="" tests/lab

``.ci/lab-setup.sh`` installs what they need. The lab is built once per session and torn down
at the end, also on failure; leftovers of a crashed run are removed first.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from ._lab import Lab, pyinfra_totals, run
from ._lab import lab as build_lab

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _named_on_command_line(config: pytest.Config) -> bool:
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip this folder unless it was asked for (it must not share a process with trio)."""
    return None if _named_on_command_line(config) else True


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    with build_lab() as built:
        yield built


@pytest.fixture(scope="session")
def wheelhouse(lab: Lab) -> Path:
    """The open node's wheelhouse, built as a user would: prebuilt wheels, no compiler (pip's
    cache spares the downloads)."""
    out = lab.root / "wheelhouse"
    run(sys.executable, "-m", "deploy.wheelhouse", "--out", out, cwd=ROOT, timeout=900)
    return out


def pyinfra(
    lab: Lab, inventory: Path, deploy: str, *, dry: bool = False, timeout: float = 600
) -> Deploy:
    """Run the pyinfra CLI from the controller namespace, at the repository root.

    ``-y`` (no prompt) for a real run; ``--dry`` without ``-y``, which lists the changes.
    """
    result = lab.in_ctl(
        sys.executable,
        "-m",
        "pyinfra",
        "--dry" if dry else "-y",
        inventory,
        deploy,
        cwd=ROOT,
        check=False,
        timeout=timeout,
    )
    return Deploy(result)


@dataclass
class Deploy:
    """A finished pyinfra run."""

    result: CompletedProcess[str]

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0

    def totals(self) -> dict[str, int]:
        return pyinfra_totals(self.output)

    def explain(self) -> str:
        return f"pyinfra exited {self.result.returncode}:\n{self.output[-6000:]}"


@dataclass
class OpenNodes:
    inventory: Path
    first: Deploy


OPEN_NODE_HOSTS = ("lab-h1", "lab-h2")


@pytest.fixture(scope="session")
def open_nodes(lab: Lab, wheelhouse: Path) -> OpenNodes:
    """The open node deployed to two lab hosts (the first run)."""
    inventory = lab.write_inventory(
        "open_nodes.py",
        {host: {} for host in OPEN_NODE_HOSTS},
        # No `slots`: the runner asks each node how many sequences it decodes at once.
        {"wheelhouse": str(wheelhouse), "n_threads": 1, "n_parallel": 2, "verify_timeout": 90},
    )
    first = pyinfra(lab, inventory, "deploy/open_node.py")
    assert first.ok, first.explain()
    return OpenNodes(inventory, first)
