"""The local cluster: inference servers the runner starts on loopback and always stops.

:func:`local_cluster` starts ``nodes`` server processes (our TextSynth-compatible node,
``python -m runner.node``, or llama.cpp's own OpenAI-compatible server,
``python -m runner.node.llama_server``), each on a free
127.0.0.1 port, waits until every one answers its readiness URL from its own listening
socket (not a stale server still holding the port), yields them, and stops them
on the way out: SIGTERM, then SIGKILL after a grace period. That holds after a normal exit,
an exception or a KeyboardInterrupt. On Linux the children also get SIGKILL from the kernel
if the runner itself dies (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the runner leaves no
orphans behind. (The kernel sends that signal when the *thread* that started the children
exits: enter the context in the thread that outlives the run, normally the main thread.)

This module holds :class:`LocalNode`, :func:`local_cluster` and the checks of its
arguments; starting and stopping one server process is in :mod:`runner._node_process`,
waiting for readiness and restarting a server that dies in :mod:`runner._node_watch`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._errors import ConfigError
from ._node_process import NodeStarter, stop_all
from ._node_watch import RestartWatch, wait_ready
from .node import default_model_path

SERVERS = ("textsynth", "openai")
MAX_RESTARTS = 3  # restarts of a node that died while the cluster ran


@dataclass(frozen=True)
class LocalNode:
    """One running local server.

    Attributes:
        name: ``local-1``, ``local-2``...
        host: always ``127.0.0.1``.
        port: its TCP port.
        pid: its process id.
        log_path: the file receiving its stdout and stderr.
    """

    name: str
    host: str
    port: int
    pid: int
    log_path: Path

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, ``http://host:port``."""
        return f"http://{self.host}:{self.port}"


@contextmanager
def local_cluster(
    *,
    nodes: int = 0,
    threads: int = 0,
    parallel: int = 0,
    server: str = "textsynth",
    model_path: str | None = None,
    engine: str = "smollm2",
    api_key: str | None = None,
    ready_timeout: float = 120.0,
    log_dir: Path | None = None,
    max_restarts: int = MAX_RESTARTS,
    on_restart: Callable[[str, int, str], None] | None = None,
    reproducible: bool = False,
) -> Iterator[list[LocalNode]]:
    """Start local inference servers, yield them once all are ready, stop them on exit.

    Args:
        nodes: how many server processes; 0 means one per CPU core. Keep
            ``nodes × threads`` at or below the number of cores: on CPU that is the fastest
            layout, oversubscribing is several times slower.
        threads: llama.cpp threads per process; 0 means the cores divided among the nodes.
        parallel: sequences each process decodes at once; 0 means the node's default.
        server: ``textsynth`` (``python -m runner.node``, the TextSynth API) or ``openai``
            (``python -m runner.node.llama_server``, llama.cpp's OpenAI API).
        model_path: a GGUF file; None means the packaged SmolLM2-135M-Instruct.
        engine: the engine id (TextSynth URL path) or model alias (OpenAI ``model``).
        api_key: a Bearer key the servers require, or None. It reaches the children through
            their environment, never their command line.
        ready_timeout: seconds allowed for every server to answer its readiness URL.
        log_dir: where the servers' logs (and generated configs) go; None means a
            temporary directory removed on exit.
        max_restarts: how many times a server that dies while the cluster runs is started
            again, on the same port (the engine benches it meanwhile and re-admits it when
            it answers); 0 never.
        on_restart: called with the node's name, its restart count and why, after each
            restart (from the watching thread).
        reproducible: the open node's ``reproducible`` key. Off by default: evaluating
            every seeded prompt afresh cost about a quarter of the throughput of
            ``movie_details`` (docs/node.md), and a batch decodes its items together, which
            changes their text now and then whatever this says. (textsynth only.)

    Yields:
        The running nodes.

    Raises:
        ConfigError: a bad argument, a missing model file, or a server that exited or did
            not become ready in time (the message quotes the end of its log). Every server
            started so far is stopped first.
    """
    count = _check_arguments(
        nodes=nodes, threads=threads, parallel=parallel, server=server, engine=engine
    )
    threads = threads or max(1, (os.cpu_count() or 1) // count)
    model = _model_file(model_path)
    with _log_folder(log_dir) as folder:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            started = [
                NodeStarter(
                    index=i,
                    server=server,
                    model=model,
                    engine=engine,
                    threads=threads,
                    parallel=parallel,
                    api_key=api_key,
                    folder=folder,
                    track=processes.append,
                    reproducible=reproducible,
                )
                for i in range(count)
            ]
            for starter in started:
                starter.start()
            wait_ready(started, api_key=api_key, timeout=ready_timeout)
            ready = [_node(starter) for starter in started]
            with RestartWatch(started, max_restarts=max_restarts, on_restart=on_restart) as watch:
                yield ready
                watch.stopping.set()
                stop_all(processes)  # while the watch lives: a node it restarted dies with it
        finally:
            stop_all(processes)


def _node(starter: NodeStarter) -> LocalNode:
    assert starter.process is not None
    return LocalNode(starter.name, "127.0.0.1", starter.port, starter.process.pid, starter.log_path)


def _check_arguments(*, nodes: int, threads: int, parallel: int, server: str, engine: str) -> int:
    if server not in SERVERS:
        raise ConfigError(
            f"cluster.local.server: expected one of {', '.join(SERVERS)}, got {server!r}"
        )
    if nodes < 0:
        raise ConfigError(f"cluster.local.nodes: expected 0 (one per core) or more, got {nodes}")
    if threads < 0:
        raise ConfigError(
            f"cluster.local.threads: expected 0 (share the cores) or more, got {threads}"
        )
    if parallel < 0:
        raise ConfigError(
            f"cluster.local.parallel: expected 0 (the node's default) or more, got {parallel}"
        )
    if not engine:
        raise ConfigError("cluster.local: the engine name must not be empty")
    return nodes or os.cpu_count() or 1


def _model_file(model_path: str | None) -> Path:
    if model_path is None:
        try:
            return default_model_path()
        except FileNotFoundError as exc:
            raise ConfigError(f"cluster.local.model_path: {exc}") from exc
    path = Path(model_path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"cluster.local.model_path: no such file: {path}")
    return path


@contextmanager
def _log_folder(log_dir: Path | None) -> Iterator[Path]:
    if log_dir is not None:
        try:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {log_dir} for the local nodes' logs: {exc}") from exc
        yield Path(log_dir)
        return
    with tempfile.TemporaryDirectory(prefix="runner-local-") as folder:
        yield Path(folder)
