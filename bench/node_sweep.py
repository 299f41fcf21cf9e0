"""``python -m bench.node_sweep``: the open node's throughput by slots and layout, and a soak.

Benchmarks, not tests; loopback only; every loop is bounded in count and time.

``sweep``: for each ``n_parallel`` in ``--parallel`` (default 1,2,4,8,16), one node with
all cores (``--threads``) gets the job's 20 ``movie_details`` chat requests (rendered from
``prompts/``, the job's system prompt, schema and sampling, seeds 1..20), sent by 20 plain
concurrent clients (httpx threads, streamed answers). Per setting: wall time, generated
tokens/s, latency p50/p95. Settings are interleaved over ``--rounds``; medians are printed.

``soak``: one node at full concurrency (``--clients`` ≥ its slots) for ``--requests``
schema-constrained requests (short answers) or ``--max-seconds``: the node's RSS sampled
every 2 s (after the first 10 % of requests as the warm-up base), each answer parsed and
validated against the schema, non-200 answers and crashes counted.

``determinism``: one node with ``--slots`` slots. Each of ``--prompts`` seeded requests of
the job (plain text and schema-constrained, temperature 0.7) is sent alone ``--repeats``
times, then as many times again while the other slots are kept busy with other requests (so
it is decoded in a batch with them). Counts how many answers equal the first idle one, idle
and under load.

All print the load average before and after, and write JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psutil

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a film database. Answer with one JSON object and nothing else."


def requests_of_job(count: int = 20) -> list[dict[str, Any]]:
    """The movie_details job's chat bodies (template, system prompt, schema, sampling)."""
    films = (ROOT / "prompts/movies.txt").read_text().split("\n")
    template = (ROOT / "prompts/movie_details.j2").read_text()
    schema = json.loads((ROOT / "prompts/movie_details.schema.json").read_text())
    bodies = []
    for i in range(count):
        title = films[i % len(films)]
        bodies.append(
            {
                "messages": [template.replace("{{ title }}", title).rstrip("\n")],
                "system": SYSTEM,
                "max_tokens": 200,
                "temperature": 0.7,
                "top_k": 40,
                "top_p": 0.9,
                "seed": 1 + i,
                "schema": schema,
            }
        )
    return bodies


class Node:
    """One ``python -m runner.node`` on a free loopback port, stopped on exit."""

    def __init__(self, folder: Path, **settings: Any) -> None:
        from tests._realnode import free_port

        self.port = free_port()
        cfg = {"models": [{"name": "smollm2", "filename": "@smollm2"}], "local_port": self.port}
        path = folder / f"node-{self.port}.cfg"
        path.write_text(json.dumps(cfg | settings))
        self.log = folder / f"node-{self.port}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runner.node", str(path)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"node not ready: {self.log.read_text()[-500:]}")

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | None, float]:
        """A streamed chat; returns status, the final frame and the latency."""
        started = time.monotonic()
        url = f"{self.url}/v1/engines/smollm2/chat"
        with httpx.stream("POST", url, json=body | {"stream": True}, timeout=600) as answer:
            raw = answer.read()
        frames = [json.loads(f) for f in raw.decode().split("\n\n") if f.strip()]
        final = frames[-1] if frames and frames[-1].get("reached_end") else None
        if final is not None:
            final = final | {"text": "".join(f.get("text", "") for f in frames)}
        return answer.status_code, final, time.monotonic() - started

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sweep(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    bodies = requests_of_job()
    runs: dict[int, list[dict[str, float]]] = {p: [] for p in args.parallel}
    for round_ in range(args.rounds):
        for parallel in args.parallel:
            with Node(folder, n_parallel=parallel, n_threads=args.threads) as node:
                started = time.monotonic()
                with ThreadPoolExecutor(len(bodies)) as pool:
                    answers = list(pool.map(node.chat, bodies))
                wall = time.monotonic() - started
            tokens = sum(final["output_tokens"] for _, final, _ in answers if final)
            latencies = [latency for _, _, latency in answers]
            run = {
                "wall_s": wall,
                "tokens_per_s": tokens / wall,
                "p50_s": statistics.median(latencies),
                "p95_s": _quantile(latencies, 0.95),
                "ok": sum(1 for status, final, _ in answers if status == 200 and final),
            }
            runs[parallel].append(run)
            print(f"round {round_ + 1} n_parallel {parallel}: {json.dumps(run)}", flush=True)
    medians = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in runs.items()}
    return {"threads": args.threads, "runs": runs, "medians": medians}


def soak(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    schema = json.loads((ROOT / "prompts/movie_details.schema.json").read_text())
    bodies = requests_of_job(args.requests)
    for body in bodies:
        body["max_tokens"] = args.max_tokens
    samples: list[tuple[int, float]] = []
    counts = {"done": 0, "non_200": 0, "invalid": 0, "truncated": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + args.max_seconds
    with Node(folder, n_parallel=args.slots, n_threads=args.threads) as node:
        process = psutil.Process(node.process.pid)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(2):
                samples.append((counts["done"], process.memory_info().rss))

        def one(body: dict[str, Any]) -> None:
            if time.monotonic() > deadline:
                return
            status, final, _ = node.chat(body)
            with lock:
                counts["done"] += 1
                if status != 200 or final is None:
                    counts["non_200"] += 1
                elif final["finish_reason"] == "length":
                    counts["truncated"] += 1  # cut by max_tokens: not expected to parse
                else:
                    try:
                        jsonschema.validate(json.loads(final["text"]), schema)
                    except (ValueError, jsonschema.ValidationError):
                        counts["invalid"] += 1

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(one, bodies))
        wall = time.monotonic() - started
        stop.set()
        samples.append((counts["done"], process.memory_info().rss))
        alive = node.process.poll() is None
    warm = [rss for done, rss in samples if done >= args.requests // 10] or [samples[-1][1]]
    return {
        "requests": counts["done"],
        "wall_s": wall,
        "counts": counts,
        "node_alive_at_end": alive,
        "rss_after_warmup_mb": warm[0] / 2**20,
        "rss_end_mb": samples[-1][1] / 2**20,
        "rss_max_after_warmup_mb": max(warm) / 2**20,
        "growth": samples[-1][1] / warm[0] - 1,
        "slots": args.slots,
        "clients": args.clients,
    }


def determinism(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    bodies = requests_of_job(args.prompts + args.slots)
    probes, fillers = bodies[: args.prompts], bodies[args.prompts :]
    for index, body in enumerate(probes):
        if index % 2:  # every other one plain text: the same model without a grammar
            body.pop("schema")
            body["max_tokens"] = 80
    counts = {"idle_same": 0, "idle_runs": 0, "loaded_same": 0, "loaded_runs": 0}
    differing: list[int] = []
    with Node(folder, n_parallel=args.slots, n_threads=args.threads) as node:
        for index, body in enumerate(probes):
            first = node.chat(body)[1]
            assert first is not None
            for _ in range(args.repeats - 1):
                again = node.chat(body)[1]
                counts["idle_runs"] += 1
                counts["idle_same"] += again is not None and again["text"] == first["text"]
            same_here = 0
            for _ in range(args.repeats):
                with ThreadPoolExecutor(args.slots) as pool:
                    load = [pool.submit(node.chat, f) for f in fillers[: args.slots - 1]]
                    time.sleep(0.3)  # the others are decoding when this one joins the batch
                    loaded = node.chat(body)[1]
                    for future in load:
                        future.result()
                counts["loaded_runs"] += 1
                same = loaded is not None and loaded["text"] == first["text"]
                counts["loaded_same"] += same
                same_here += same
            if same_here < args.repeats:
                differing.append(index)
            print(f"prompt {index}: under load {same_here}/{args.repeats} same", flush=True)
    return {"slots": args.slots, "prompts": args.prompts, "repeats": args.repeats,
            "counts": counts, "prompts_differing_under_load": differing}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.node_sweep")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sweep")
    s.add_argument(
        "--parallel", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4, 8, 16]
    )
    s.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    s.add_argument("--rounds", type=int, default=1)
    k = sub.add_parser("soak")
    k.add_argument("--requests", type=int, default=2000)
    k.add_argument("--max-seconds", type=float, default=1800)
    k.add_argument("--max-tokens", type=int, default=60)
    k.add_argument("--slots", type=int, default=4)
    k.add_argument("--clients", type=int, default=8)
    k.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    d = sub.add_parser("determinism")
    d.add_argument("--prompts", type=int, default=6)
    d.add_argument("--repeats", type=int, default=5)
    d.add_argument("--slots", type=int, default=4)
    d.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    for p in (s, k, d):
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="node-sweep-") as tmp:
        mode = {"sweep": sweep, "soak": soak, "determinism": determinism}[args.mode]
        result = mode(args, Path(tmp))
    result["load_before_after"] = [None, os.getloadavg()]
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
