"""``python -m runner.node.llama_server``: llama.cpp's own OpenAI-compatible HTTP server.

The same engine as the open node (the ``xllamacpp`` wheel), serving llama-server's endpoints
(``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``, ``/health``...) directly:
the peer of the runner's OpenAI protocol (``cluster=local_openai``), with continuous
batching over ``--parallel`` sequences. The API key, if any, comes from the environment
variable named by ``--api-key-env``, never from the command line. Runs until SIGTERM or
SIGINT; exit status 2 for a bad argument or model file.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until a stop signal arrives; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m runner.node.llama_server")
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--alias", required=True, help="the model id clients send")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parallel", type=int, default=8, help="sequences decoded at once")
    parser.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    parser.add_argument("--api-key-env", metavar="NAME")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"error: --model: no such file: {args.model}", file=sys.stderr)
        return 2
    if min(args.threads, args.parallel, args.ctx) < 1:
        print("error: --threads, --parallel and --ctx must be at least 1", file=sys.stderr)
        return 2
    key = os.environ.get(args.api_key_env, "") if args.api_key_env else None
    if args.api_key_env and not key:
        print(f"error: --api-key-env {args.api_key_env}: unset or empty", file=sys.stderr)
        return 2

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx * args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.ui = False
    params.verbosity = -1
    if key:
        params.api_keys = [key]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # the binding raises on a bad file or a taken port
        print(f"error: llama.cpp server did not start: {exc}", file=sys.stderr)
        return 1
    print(f"listening on {server.listening_address}, model {args.alias}", flush=True)
    stop.wait()
    del server  # joins llama.cpp's loop and frees the model
    return 0


if __name__ == "__main__":
    sys.exit(main())
