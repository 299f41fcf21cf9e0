"""The node package's public surface: a sorted ``__all__`` that lists every public name."""

from __future__ import annotations

import subprocess
import sys

import runner.node
from tests._realnode import REPO, node_env


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_lists_every_public_name() -> None:
    public = {name for name in vars(runner.node) if not name.startswith("_")}
    public -= {"annotations"}  # from __future__
    assert runner.node.__all__ == sorted(runner.node.__all__, key=isort_key)
    assert set(runner.node.__all__) == public


def test_importing_the_package_does_not_load_llama_cpp() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, runner.node; print('llama_cpp' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=node_env(),
    )
    assert done.stdout.strip() == "False"
