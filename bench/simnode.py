"""Simulated TextSynth nodes: one behaviour core, two front ends.

- In process: :class:`SimTransport` (an httpx transport) over a :class:`SimCluster` —
  virtual-time friendly, for engine tests.
- Real HTTP on 127.0.0.1: ``python -m bench.simnode --spec spec.json [--log requests.jsonl]``
  serves every node of a :class:`ClusterSpec` file from one process and prints
  ``{"ready": {"<node>": "127.0.0.1:<port>", ...}}`` on one line once all listen; or
  :func:`sim_server`, an async context manager running that in a child process.

The spec file is ``ClusterSpec.dumps()``: ``{"time_scale": 0.01, "answer":
"module:function" | null, "nodes": [{"name": "n1", "speed": 20, "slots": 2, ...}]}``. The
process stops on SIGTERM/SIGINT, after ``--max-seconds`` (default 3600), and with
``--stop-on-stdin-eof`` when its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import IO

import trio

from ._answers import AnswerHook, load_answer_hook, make_marker
from ._behaviour import LogEntry, NodeDied, NodeDown, Reply, SimNode
from ._clock import SimClock
from ._cluster import SimCluster
from ._process import SimServer, read_log, sim_server
from ._server import ready_line, serve, wait_for_exit
from ._spec import ClusterSpec, ErrorBurst, SimNodeSpec
from ._transport import SimTransport

__all__ = [
    "AnswerHook",
    "ClusterSpec",
    "ErrorBurst",
    "LogEntry",
    "NodeDied",
    "NodeDown",
    "Reply",
    "SimClock",
    "SimCluster",
    "SimNode",
    "SimNodeSpec",
    "SimServer",
    "SimTransport",
    "main",
    "make_marker",
    "read_log",
    "sim_server",
]


async def _run(
    spec: ClusterSpec, log: IO[str] | None, max_seconds: float, watch_stdin: bool
) -> None:
    def write(entry: LogEntry) -> None:
        if log is not None:
            log.write(_json_line(entry))
            log.flush()

    cluster = SimCluster(
        spec.nodes, time_scale=spec.time_scale, answer=load_answer_hook(spec.answer), on_log=write
    )
    ports = {n.name: int(n.address.rsplit(":", 1)[1]) for n in spec.nodes if n.address is not None}

    def ready(bound: dict[str, int]) -> None:
        print(ready_line(bound), flush=True)

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, cluster, ports=ports, on_ready=ready))
        await wait_for_exit(max_seconds, watch_stdin=watch_stdin)
        nursery.cancel_scope.cancel()


def _json_line(entry: LogEntry) -> str:
    return json.dumps(entry.to_json()) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.simnode``: serve a cluster spec's nodes on 127.0.0.1."""
    parser = argparse.ArgumentParser(prog="python -m bench.simnode", description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="a ClusterSpec JSON file")
    parser.add_argument("--log", type=Path, help="append one JSON line per request here")
    parser.add_argument("--time-scale", type=float, help="override the spec's time_scale")
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="stop after this long (default 3600)"
    )
    parser.add_argument(
        "--stop-on-stdin-eof", action="store_true", help="stop when stdin closes (the parent left)"
    )
    args = parser.parse_args(argv)
    try:
        spec = ClusterSpec.loads(args.spec.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.exit(f"{args.spec}: not a usable cluster spec: {exc}")
    if args.time_scale is not None:
        spec = ClusterSpec(spec.nodes, time_scale=args.time_scale, answer=spec.answer)
    log = args.log.open("a", encoding="utf-8") if args.log else None
    try:
        trio.run(_run, spec, log, args.max_seconds, args.stop_on_stdin_eof)
    finally:
        if log is not None:
            log.close()


if __name__ == "__main__":
    main()
