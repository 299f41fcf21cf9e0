"""Tests of the pyinfra deploys' own operations, facts and settings.

pyinfra-testing imports pyinfra_cli, which patches the process with gevent; that breaks trio.
These tests therefore run in a pytest process of their own and are collected only when this
folder is named on the command line::

    python -m pytest -p no:cacheprovider -o addopts="" tests/deploy_ops
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _named_on_command_line(config: pytest.Config) -> bool:
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip this folder unless it was asked for (it must not share a process with trio)."""
    if not _named_on_command_line(config):
        return True
    _patch_early()
    return None


def _patch_early() -> None:
    """Import pyinfra_cli (its gevent patching) before the tests do, without its warning.

    gevent warns that ssl was imported before it patched it (pytest's plugins import anyio
    first); pyinfra's operations and facts, all that these tests run, do not use ssl.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyinfra_cli  # noqa: F401
