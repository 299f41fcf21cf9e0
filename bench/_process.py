"""Simulated nodes served on 127.0.0.1 for an ``async with`` block.

The benchmarks run the nodes in a child process (``python -m bench.simnode``) so that the
client under test and the simulation do not share a core; the child stops by itself when
its stdin closes, so it cannot outlive the harness. Tests may serve them in this process
instead (``in_process=True``): no start-up cost, but one core for client and nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from ._answers import load_answer_hook
from ._behaviour import LogEntry
from ._cluster import SimCluster
from ._server import serve
from ._spec import ClusterSpec

_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class SimServer:
    """Running simulated nodes.

    Attributes:
        addresses: ``{node name: "127.0.0.1:port"}``.
        process: the child process serving them (``None`` when served in this process).
        log_path: where the child writes one JSON line per request.
    """

    addresses: dict[str, str]
    process: trio.Process | None = None
    log_path: Path | None = None
    _entries: list[LogEntry] = field(default_factory=list)
    _final: list[LogEntry] | None = None

    @property
    def base_urls(self) -> dict[str, str]:
        """``{node name: "http://127.0.0.1:port"}``."""
        return {name: f"http://{address}" for name, address in self.addresses.items()}

    def cpu_seconds(self) -> float | None:
        """CPU seconds the child process has used so far (``None`` in process or off Linux)."""
        if self.process is None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> list[LogEntry]:
        """Every request logged so far (all of them once the ``async with`` has exited)."""
        if self._final is not None:
            return self._final
        if self.log_path is None:
            return list(self._entries)
        return read_log(self.log_path) if self.log_path.exists() else []


def read_log(path: Path) -> list[LogEntry]:
    """The log entries of a JSON-lines request log."""
    with path.open(encoding="utf-8") as lines:
        return [LogEntry(**json.loads(line)) for line in lines if line.strip()]


@asynccontextmanager
async def sim_server(
    spec: ClusterSpec,
    *,
    in_process: bool = False,
    log_path: Path | None = None,
    max_seconds: float = 3600.0,
    startup_timeout: float = 20.0,
) -> AsyncIterator[SimServer]:
    """Serve ``spec``'s nodes on 127.0.0.1 for the ``async with`` block.

    Args:
        spec: the nodes and time scale.
        in_process: serve them from this process instead of a child process.
        log_path: where the request log goes (default: a temporary file, gone after the
            block; the log is complete only once the block has exited).
        max_seconds: the child stops by itself after this long, whatever happens.
        startup_timeout: how long to wait for the nodes to listen.

    Raises:
        RuntimeError: the child exited or did not report its ports in time.
    """
    if in_process:
        async with _in_process(spec) as server:
            yield server
        return
    with tempfile.TemporaryDirectory(prefix="simnode-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        log_path = log_path or Path(tmp) / "requests.jsonl"
        spec_path.write_text(spec.dumps(), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        command = [
            sys.executable, "-m", "bench.simnode",
            "--spec", str(spec_path), "--log", str(log_path),
            "--max-seconds", str(max_seconds), "--stop-on-stdin-eof",
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        try:
            with trio.fail_after(startup_timeout):
                addresses = await _ready(process)
            server = SimServer(addresses, process, log_path)
            yield server
        finally:
            await _stop(process)
        server._final = read_log(log_path) if log_path.exists() else []


async def _ready(process: trio.Process) -> dict[str, str]:
    assert process.stdout is not None
    buffer = b""
    while b"\n" not in buffer:
        data = await process.stdout.receive_some(4096)
        if not data:
            raise RuntimeError(f"the simulation exited before listening (code {process.poll()})")
        buffer += data
    line = buffer.split(b"\n", 1)[0]
    return dict(json.loads(line)["ready"])


async def _stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if process.stdin is not None:
            await process.stdin.aclose()  # the child's signal to stop
        with trio.move_on_after(5):
            await process.wait()
        if process.poll() is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


@asynccontextmanager
async def _in_process(spec: ClusterSpec) -> AsyncIterator[SimServer]:
    server = SimServer({})
    cluster = SimCluster(
        spec.nodes,
        time_scale=spec.time_scale,
        answer=load_answer_hook(spec.answer),
        on_log=server._entries.append,
    )
    ports = {n.name: int(n.address.rsplit(":", 1)[1]) for n in spec.nodes if n.address}

    def ready(bound: dict[str, int]) -> None:
        server.addresses = {name: f"127.0.0.1:{port}" for name, port in bound.items()}

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, cluster, ports=ports, on_ready=ready))
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
    server._final = list(server._entries)
