"""Baseline 2: an llm-swarm-style setup — nginx in front of the nodes, one global limit.

The harness starts Debian's nginx with a generated configuration on a free 127.0.0.1 port:
one ``upstream`` with ``least_conn`` over every node, ``proxy_buffering off``, keep-alive
connections to the nodes, and nginx's default passive health checks (``max_fails=1``,
``fail_timeout=10s``) and retry rule (``proxy_next_upstream error timeout``: a POST already
sent is not re-sent). nginx's proxy timeouts are its defaults (60 s), scaled like every
other time; ``fail_timeout`` takes whole seconds only, so it is scaled but at least 1 s.
The client sends every item to nginx with one global limit of requests in flight and
retries a failed request (through nginx) ``settings.retries`` times; its requests are spread
over several small httpx pools (see :func:`bench._strategy.clients`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from ._items import Item
from ._strategy import Node, Record, Settings, Trace, clients, complete

NGINX_TIMEOUT = 60.0  # nginx's default proxy timeouts, simulated seconds
NGINX_FAIL_TIMEOUT = 10.0  # nginx's default fail_timeout
CONNECTIONS_PER_CLIENT = 8  # requests are spread over small httpx pools (see clients())


class NginxUnavailable(RuntimeError):
    """Raised when the nginx binary is missing or nginx did not start."""


async def nginx(
    nodes: Sequence[Node],
    items: Iterable[Item],
    settings: Settings,
    record: Record,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Run ``items`` through nginx (see the module docstring)."""
    if transport is not None:
        raise ValueError("the nginx strategy needs real nodes, not an injected transport")
    async with running_nginx(nodes, settings) as base_url:
        url = f"{base_url}/v1/engines/{settings.engine_id}/completions"
        pools = -(-settings.concurrency // CONNECTIONS_PER_CLIENT)
        async with clients(pools, settings, None) as spread:
            work = list(items)  # llm-swarm-style clients load the dataset and gather tasks
            answers: list[str | None] = [None] * len(work)
            semaphore = trio.Semaphore(settings.concurrency)

            async def run(index: int, it: Item) -> None:
                client = spread[index % len(spread)]
                async with semaphore:
                    for attempt in range(settings.retries + 1):
                        start = trio.current_time()
                        answer = await complete(client, url, it, settings)
                        final = answer.outcome == "ok" or attempt == settings.retries
                        end = trio.current_time()
                        record(
                            Trace(
                                it.id,
                                "nginx",
                                start,
                                end,
                                answer.outcome,
                                answer.output_tokens,
                                final,
                            )
                        )
                        if answer.outcome == "ok":
                            answers[index] = answer.text
                            return

            async with trio.open_nursery() as nursery:
                for index, it in enumerate(work):
                    nursery.start_soon(run, index, it)


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render_config(nodes: Sequence[Node], settings: Settings, *, port: int, prefix: Path) -> str:
    """The nginx configuration (pure)."""
    fail = f"{max(1, round(settings.real(NGINX_FAIL_TIMEOUT)))}s"  # whole seconds only
    servers = "\n".join(
        f"        server {node.base_url.removeprefix('http://')} max_fails=1 fail_timeout={fail};"
        for node in nodes
    )
    timeout = _ms(settings.real(NGINX_TIMEOUT))
    return f"""\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream nodes {{
        least_conn;
{servers}
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://nodes;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_connect_timeout {timeout};
            proxy_send_timeout {timeout};
            proxy_read_timeout {timeout};
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """The nginx binary's path, if nginx is installed (Debian puts it in /usr/sbin)."""
    return shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def _write_config(prefix: Path, text: str) -> Path:
    prefix.chmod(0o755)  # nginx workers drop root and must reach their temp directories
    conf = prefix / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


def _error_log(prefix: Path) -> str:
    path = prefix / "error.log"
    return path.read_text(errors="replace").strip()[-500:] if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def running_nginx(nodes: Sequence[Node], settings: Settings) -> AsyncIterator[str]:
    """Run nginx in front of ``nodes`` for the block; yields its base URL.

    Raises:
        NginxUnavailable: no ``nginx`` binary, or it did not listen within 10 s.
    """
    binary = nginx_binary()
    if binary is None:
        raise NginxUnavailable("nginx is not installed (apt-get install -y nginx-light)")
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        prefix = Path(tmp)
        port = _free_port()
        conf = _write_config(prefix, render_config(nodes, settings, port=port, prefix=prefix))
        process = await trio.lowlevel.open_process(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdin=subprocess.DEVNULL,
        )
        try:
            await _wait_listening(process, port, prefix)
            yield f"http://127.0.0.1:{port}"
        finally:
            with trio.CancelScope(shield=True):
                process.send_signal(signal.SIGTERM)  # fast shutdown
                with trio.move_on_after(5):
                    await process.wait()
                if process.poll() is None:
                    process.kill()
                    await process.wait()


async def _wait_listening(process: trio.Process, port: int, prefix: Path) -> None:
    with trio.move_on_after(10):
        while process.poll() is None:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            return
    raise NginxUnavailable(f"nginx did not start (exit {process.poll()}): {_error_log(prefix)}")
