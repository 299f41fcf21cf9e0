"""Real node processes for end-to-end tests: ``python -m runner.node`` with the real model.

Import the fixtures into a ``conftest.py`` to use them elsewhere::

    from tests._realnode import real_node  # noqa: F401  (a session-wide node)

or start a node with its own configuration with :func:`running_node`. Tests using them should
be marked ``@pytest.mark.model``. They skip when xllamacpp or the model is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE = "smollm2"
KEY_VARIABLE = "TEST_NODE_API_KEY"
REAL_NODE_SLOTS = 4
"""Sequences the session-wide node decodes at once."""


@dataclass(frozen=True)
class RunningNode:
    """A node process started for a test.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        engine: the engine id it serves.
        process: the process (its stdout is captured into ``log_path``).
        log_path: the file receiving its stdout and stderr.
        api_key: the Bearer key it requires, or None.
    """

    url: str
    engine: str
    process: subprocess.Popen[bytes]
    log_path: Path
    api_key: str | None = None

    def endpoint(self, action: str) -> str:
        """The URL of ``/v1/engines/{engine}/{action}``."""
        return f"{self.url}/v1/engines/{self.engine}/{action}"

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header when a key is configured."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def model_ready() -> str | None:
    """Why the real model cannot run here, or None when it can."""
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (pip install -e '.[node]')"
    from runner.node import default_model_path

    try:
        default_model_path()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def node_env(api_key: str | None = None) -> dict[str, str]:
    """The environment for a node child process (the repository on PYTHONPATH)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop(KEY_VARIABLE, None)
    if api_key is not None:
        env[KEY_VARIABLE] = api_key
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_node(
    folder: Path,
    *,
    api_key: str | None = None,
    ready_timeout: float = 60.0,
    **settings: Any,
) -> Iterator[RunningNode]:
    """Start ``python -m runner.node`` on a free loopback port and stop it afterwards.

    Args:
        folder: where the config and the log are written.
        api_key: a Bearer key the node requires (passed with ``--api-key-env``).
        ready_timeout: seconds allowed to answer ``/health``.
        **settings: config keys, added to the defaults (the packaged model as ``smollm2``,
            one thread, a free port).
    """
    reason = model_ready()
    if reason is not None:
        pytest.skip(reason)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = {
        "models": [{"name": ENGINE, "filename": "@smollm2"}],
        "local_port": port,
        "n_threads": 1,
    } | settings
    cfg_path = folder / "node.cfg"
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    log_path = folder / "node.log"
    argv = [sys.executable, "-m", "runner.node", str(cfg_path)]
    if api_key is not None:
        argv += ["--api-key-env", KEY_VARIABLE]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=node_env(api_key), cwd=REPO
        )
    node = RunningNode(f"http://127.0.0.1:{port}", ENGINE, process, log_path, api_key)
    try:
        _wait_healthy(node, ready_timeout)
        yield node
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(node: RunningNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            log = node.log_path.read_text(errors="replace")
            raise RuntimeError(f"node exited with {node.process.returncode}:\n{log}")
        try:
            if httpx.get(f"{node.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"node not healthy within {timeout} s")


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """One node with the packaged SmolLM2 model, shared by the whole session (no API key,
    default queue, ``n_ctx`` 512 so that prompt truncation is cheap to reach)."""
    folder = tmp_path_factory.mktemp("real_node")
    with running_node(folder, n_ctx=512, n_parallel=REAL_NODE_SLOTS) as node:
        yield node
