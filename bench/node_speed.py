"""``python bench/node_speed.py``: generation speed of real local nodes, plain clients.

Starts ``--nodes`` local TextSynth nodes (``runner._local.local_cluster``) with the packaged
SmolLM2-135M-Instruct, or measures an already running node given with ``--url``. One plain
sequential client per node sends ``--requests`` chat requests asking for a film synopsis
(``max_tokens`` 128 by default, a fixed seed per request) and prints, per request, the
prompt and generated token counts and the generated tokens per second (wall time of the
whole request, prompt included), then the median per node and the total over all nodes,
and the load average before and after (other work on the machine skews the figures).

Example (the figures in docs/node.md)::

    python bench/node_speed.py --nodes 1 --threads 1
    python bench/node_speed.py --nodes 2 --threads 1
    python bench/node_speed.py --nodes 1 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Sequence

import httpx

from runner._local import local_cluster

FILMS = ("Titanic", "The Matrix", "Forrest Gump", "Shrek", "Inception", "Toy Story", "Frozen")


def measure(url: str, engine: str, *, requests: int, max_tokens: int) -> list[float]:
    """Send the requests one after another; return the tokens/s of each."""
    speeds = []
    with httpx.Client(timeout=600) as client:
        for index in range(requests):
            film = FILMS[index % len(FILMS)]
            body = {
                "messages": [f"Write a synopsis of the film {film}."],
                "max_tokens": max_tokens,
                "seed": index + 1,
            }
            started = time.perf_counter()
            answer = client.post(f"{url}/v1/engines/{engine}/chat", json=body)
            elapsed = time.perf_counter() - started
            answer.raise_for_status()
            result = answer.json()
            speeds.append(result["output_tokens"] / elapsed)
            print(
                f"{url} {film}: {result['input_tokens']} prompt + "
                f"{result['output_tokens']} generated tokens in {elapsed:.2f} s "
                f"= {speeds[-1]:.1f} tokens/s"
            )
    return speeds


def run(urls: Sequence[str], engine: str, *, requests: int, max_tokens: int) -> None:
    """One sequential client per node, all at once; print medians and the total."""
    results: dict[str, list[float]] = {}

    def client(url: str) -> None:
        results[url] = measure(url, engine, requests=requests, max_tokens=max_tokens)

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(url,)) for url in urls]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    for url in urls:
        print(f"{url}: median {statistics.median(results[url]):.1f} generated tokens/s")
    if len(urls) > 1:
        total = sum(statistics.median(speeds) for speeds in results.values())
        print(f"all {len(urls)} nodes together: {total:.1f} tokens/s (sum of medians)")
    print(f"wall time {elapsed:.1f} s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/node_speed.py", description=__doc__)
    parser.add_argument("--url", help="measure this running node instead of starting nodes")
    parser.add_argument("--engine", default="smollm2")
    parser.add_argument("--nodes", type=int, default=1, help="local nodes to start")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per node")
    parser.add_argument("--requests", type=int, default=5, help="requests per node")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    options = {"requests": args.requests, "max_tokens": args.max_tokens}
    if args.url:
        run([args.url.rstrip("/")], args.engine, **options)
        return
    with local_cluster(nodes=args.nodes, threads=args.threads, engine=args.engine) as nodes:
        run([node.url for node in nodes], args.engine, **options)


if __name__ == "__main__":
    main()
