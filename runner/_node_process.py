"""One local node server process: how it is started, started again, and stopped.

:class:`NodeStarter` launches one server (``python -m runner.node`` with a generated
config, or ``python -m runner.node.llama_server``) on a free 127.0.0.1 port, with a
scrubbed environment (the API key travels in it, never on the command line) and its
output appended to a log whose tail it quotes when the server fails. The child runs in its
own session (a terminal's Ctrl-C reaches the runner, not it) and, on Linux, gets SIGKILL
from the kernel if the runner dies (``PR_SET_PDEATHSIG``, :func:`die_with_parent`).
:func:`stop_all` stops servers: SIGTERM to each process group, then SIGKILL after a grace
period.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from ._errors import ConfigError

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
KEY_VARIABLE = "RUNNER_NODE_API_KEY"
# Never inherit the runner's key variable (or settings an older server read from the
# environment) into a node.
SCRUBBED_ENV = ("HOST", "PORT", "CONFIG_FILE", "API_KEY", KEY_VARIABLE)
PR_SET_PDEATHSIG = 1


class NodeStarter:
    """Starts one server process (again, if its port was taken or it died) and quotes its log."""

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
        self.port = port or free_port()
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
                preexec_fn=die_with_parent(os.getpid()),
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

    def failure(self, what: str) -> ConfigError:
        return ConfigError(
            f"local {self.server} node {self.name} (port {self.port}) {what}; "
            f"log {self.log_path}: {self.log_tail()}"
        )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
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


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when the runner dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
