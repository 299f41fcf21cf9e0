"""``python -m runner.node CONFIG [--api-key-env NAME]``: serve the TextSynth API.

Exit status: 2 when the configuration is unusable (the file, a key, a model file, the API
key variable), 1 when the node could not start for another reason (the port is taken, the
address does not exist); start-up failures print one line on stderr, without a traceback.
SIGTERM or SIGINT stop the node gracefully, after which it ends by that signal (uvicorn
re-raises it).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._errors import ConfigError
from ._cfg import ServeConfig, load_config

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger("runner.node")

EXIT_CONFIG = 2
EXIT_START = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the node until it is stopped; return the exit status (see the module doc)."""
    parser = argparse.ArgumentParser(
        prog="python -m runner.node",
        description="Serve the TextSynth REST API with llama.cpp's server engine (docs/node.md).",
    )
    parser.add_argument("config", metavar="CONFIG", help="ts_server.cfg-format file (JSON5)")
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="require 'Authorization: Bearer KEY' on /v1 requests, KEY being the value of "
        "the environment variable NAME (the key is never read from the config file)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        api_key = _api_key(args.api_key_env)
        _setup_logging(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    # Imported only now, so that configuration errors are reported even without llama.cpp.
    from ._app import create_app
    from ._backend import Backend

    for key in cfg.ignored:
        log.info("%s: ignoring ts_server key %r (not used by this node)", cfg.source, key)
    engines: dict[str, Backend] = {}
    for index, spec in enumerate(cfg.models):
        try:
            engines[spec.name] = Backend(
                spec,
                n_threads=cfg.n_threads,
                n_parallel=cfg.n_parallel,
                n_ctx=cfg.n_ctx,
                max_queue=cfg.max_queue,
                reproducible=cfg.reproducible,
            )
        except ValueError as exc:
            print(f"error: {cfg.source}: models[{index}].filename: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if not engines[spec.name].has_chat_template:
            log.info("%s: the model file has no chat template; chat uses ChatML", spec.name)
        log.info(
            "%s: loaded %s (%d slots × %d tokens, %d threads)",
            spec.name, spec.path, cfg.n_parallel, cfg.n_ctx, cfg.n_threads,
        )  # fmt: skip

    try:
        sock = _listen(cfg.bind_addr, cfg.local_port)
    except OSError as exc:
        print(f"error: cannot listen on {cfg.bind_addr}:{cfg.local_port}: {exc}", file=sys.stderr)
        return EXIT_START
    host, port = sock.getsockname()[:2]

    def on_ready() -> None:
        log.info("listening on http://%s:%d, engines: %s", host, port, ", ".join(engines))
        if cfg.log_start:
            print("Started.", flush=True)

    app = create_app(engines, api_key=api_key, max_body_bytes=cfg.max_body_bytes, on_ready=on_ready)
    _serve(app, sock)
    return 0


def _api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key:
        raise ConfigError(f"--api-key-env {variable}: the environment variable is unset or empty")
    return key


def _setup_logging(cfg: ServeConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if cfg.log_filename is not None:
        try:
            handlers.append(logging.FileHandler(cfg.log_filename, encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{cfg.source}: log_filename: cannot open: {exc}") from exc
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the node's own loopback calls


def _listen(address: str, port: int) -> socket.socket:
    """Bind and listen before serving: a taken port fails here with a clear message, and
    connections that arrive before the server loop runs wait in the backlog."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.create_server((address, port), family=family, backlog=128)


def _serve(app: Starlette, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=75,  # fewer races with clients reusing an idle connection
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
