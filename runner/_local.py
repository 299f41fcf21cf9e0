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
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from ._errors import ConfigError
from .node import default_model_path

log = logging.getLogger("runner")

SERVERS = ("textsynth", "openai")
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
POLL_INTERVAL = 0.1
BIND_ATTEMPTS = 3  # restarts of a node whose port was taken between choosing and binding
MAX_RESTARTS = 3  # restarts of a node that died while the cluster ran
WATCH_INTERVAL = 0.5  # seconds between looks at the servers
KEY_VARIABLE = "RUNNER_NODE_API_KEY"
# Never inherit the runner's key variable (or settings an older server read from the
# environment) into a node.
SCRUBBED_ENV = ("HOST", "PORT", "CONFIG_FILE", "API_KEY", KEY_VARIABLE)
PR_SET_PDEATHSIG = 1


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
                _Starter(
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
            ready = _wait_ready(started, api_key=api_key, timeout=ready_timeout)
            with _Watch(started, max_restarts=max_restarts, on_restart=on_restart) as watch:
                yield ready
                watch.stopping.set()
                _stop(processes)  # while the watch lives: a node it restarted dies with it
        finally:
            _stop(processes)


class _Starter:
    """Starts one server process (again, if its port was taken) and checks readiness."""

    def __init__(
        self,
        *,
        index: int,
        server: str,
        model: Path,
        engine: str,
        threads: int,
        parallel: int,
        api_key: str | None,
        folder: Path,
        track: Callable[[subprocess.Popen[bytes]], None],
        reproducible: bool = False,
    ) -> None:
        self.name = f"local-{index + 1}"
        self.reproducible = reproducible
        self.server = server
        self.model = model
        self.engine = engine
        self.threads = threads
        self.parallel = parallel
        self.api_key = api_key
        self.log_path = folder / f"{self.name}.log"
        self.cfg_path = folder / f"{self.name}.cfg"
        self.track = track
        self.attempts = 0
        self.port = 0
        self.log_start = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ready_path(self) -> str:
        return "/health" if self.server == "textsynth" else "/v1/models"

    def start(self) -> None:
        try:
            self._start()
        except OSError as exc:
            raise ConfigError(f"cannot start local node {self.name}: {exc}") from exc

    def _start(self, port: int = 0) -> None:
        self.attempts += 1
        self.port = port or _free_port()
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        argv = self._textsynth_argv(env) if self.server == "textsynth" else self._openai_argv(env)
        with open(self.log_path, "ab") as log:
            self.log_start = log.tell()
            log.write(f"--- {self.name}: {' '.join(argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C reaches the runner, not them
                preexec_fn=_die_with_parent(os.getpid()),
            )
        self.track(self.process)

    def _textsynth_argv(self, env: dict[str, str]) -> list[str]:
        cfg: dict[str, object] = {
            "models": [{"name": self.engine, "filename": str(self.model)}],
            "local_port": self.port,
            "bind_addr": "127.0.0.1",
            "n_threads": self.threads,
            "reproducible": self.reproducible,
        }
        if self.parallel:
            cfg["n_parallel"] = self.parallel
        self.cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        argv = [sys.executable, "-m", "runner.node", str(self.cfg_path)]
        if self.api_key is not None:
            env[KEY_VARIABLE] = self.api_key
            argv += ["--api-key-env", KEY_VARIABLE]
        return argv

    def _openai_argv(self, env: dict[str, str]) -> list[str]:
        argv = [
            sys.executable, "-m", "runner.node.llama_server",
            "--model", str(self.model),
            "--alias", self.engine,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--threads", str(self.threads),
        ]  # fmt: skip
        if self.parallel:
            argv += ["--parallel", str(self.parallel)]
        if self.api_key is not None:
            env[KEY_VARIABLE] = self.api_key
            argv += ["--api-key-env", KEY_VARIABLE]
        return argv

    def log_tail(self, lines: int = 3) -> str:
        """The gist of the end of this attempt's log, on one line."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_start)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        kept = [line.strip() for line in text.splitlines()[1:] if line.strip()][-lines:]
        gist = " | ".join(kept) or "(empty log)"
        return gist if len(gist) <= 400 else "..." + gist[-397:]

    def restart(self) -> None:
        """Start the server again on the port it had (the runner's nodes point at it)."""
        self._start(self.port)

    def node(self) -> LocalNode:
        assert self.process is not None
        return LocalNode(self.name, "127.0.0.1", self.port, self.process.pid, self.log_path)

    def failure(self, what: str) -> ConfigError:
        return ConfigError(
            f"local {self.server} node {self.name} (port {self.port}) {what}; "
            f"log {self.log_path}: {self.log_tail()}"
        )


class _Watch:
    """A thread that starts a server again when it dies while the cluster runs, at most
    ``max_restarts`` times per server. It must outlive the servers it started
    (``PR_SET_PDEATHSIG`` follows the starting thread): stop the servers first, then leave."""

    def __init__(
        self,
        starters: list[_Starter],
        *,
        max_restarts: int,
        on_restart: Callable[[str, int, str], None] | None,
    ) -> None:
        self.starters = starters
        self.max_restarts = max_restarts
        self.on_restart = on_restart
        self.restarts = {starter.name: 0 for starter in starters}
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-cluster-watch", daemon=True)

    def __enter__(self) -> _Watch:
        if self.max_restarts > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self.stopping.wait(WATCH_INTERVAL):
            for starter in self.starters:
                assert starter.process is not None
                code = starter.process.poll()
                if code is None or self.restarts[starter.name] >= self.max_restarts:
                    continue
                if self.stopping.is_set():
                    return
                why = f"exited with status {code}: {starter.log_tail()}"
                try:
                    starter.restart()
                except OSError as exc:
                    why += f"; restart failed: {exc}"
                self.restarts[starter.name] += 1
                count = self.restarts[starter.name]
                log.warning(
                    "local node %s %s; started again on port %d (%d of %d)",
                    starter.name, why, starter.port, count, self.max_restarts,
                )  # fmt: skip
                if self.on_restart is not None:
                    self.on_restart(starter.name, count, why)


def _wait_ready(
    starters: list[_Starter], *, api_key: str | None, timeout: float
) -> list[LocalNode]:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    pending = list(starters)
    # trust_env=False: a proxy configured in the environment must not see loopback traffic.
    with httpx.Client(timeout=2.0, headers=headers, trust_env=False) as client:
        while pending:
            for starter in list(pending):
                assert starter.process is not None
                code = starter.process.poll()
                if code is not None:
                    if "in use" in starter.log_tail() and starter.attempts < BIND_ATTEMPTS:
                        starter.start()  # its port was taken meanwhile: try another one
                        continue
                    raise starter.failure(f"exited with status {code} while starting")
                try:
                    answer = client.get(f"http://127.0.0.1:{starter.port}{starter.ready_path}")
                except httpx.TransportError:
                    continue
                # A 200 from a stale server that holds the port (a previous node not yet
                # gone) is not this node being ready: the listener must be its own.
                if answer.status_code == 200 and listens_on(starter.process.pid, starter.port):
                    pending.remove(starter)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise pending[0].failure(f"was not ready within {timeout:g} s")
            time.sleep(POLL_INTERVAL)
    return [starter.node() for starter in starters]


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` of loopback.

    Linux: the listening socket's inode (``/proc/net/tcp``, ``tcp6``) among the process's
    open file descriptors. Where ``/proc`` cannot tell (another OS), the answer is yes.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address "0100007F:1F90", state 0A = LISTEN, inode in column 10
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    if not Path("/proc/net/tcp").exists():
        return True
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every running server, SIGKILL what is left after the grace period, reap all."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when the runner dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
