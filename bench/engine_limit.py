"""``python -m bench.engine_limit``: what the node's engine gives with no node and no runner.

The yardstick of ``python -m bench.real_model``. In this one process it loads ``--nodes``
copies of the node's own :class:`runner.node._backend.Backend` (llama.cpp's server engine,
the same parameters as the local cluster's nodes: threads, slots, context per slot, and
``reproducible`` off unless ``--reproducible``), builds
the job's requests exactly as the runner builds them (template, system prompt, schema,
sampling, seeds) and turns each into the engine's native body as the node would. Then
``--parallel`` plain threads per engine pull requests from one shared queue and call the
engine in-process (``handle_completions``: no HTTP, no streaming, no scheduling beyond the
queue). Prints one JSON line: wall time from the first call to the last answer, generated
tokens (counted as the node counts them: the end-of-generation token is not one), tokens/s,
and how many answers there were.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runner._plan import prepare
from runner._textsynth import build
from runner.node._api import parse_chat, parse_completion
from runner.node._backend import Backend
from runner.node._cfg import ModelSpec, ServeConfig
from runner.node._model_file import default_model_path


def native_bodies(job: str, engines: Sequence[Backend]) -> list[tuple[Backend, dict[str, Any]]]:
    """The job's requests as the node would hand them to each engine (round robin)."""
    from bench.real_model import job_config

    with tempfile.TemporaryDirectory(prefix="engine-limit-") as tmp:
        cfg = job_config(job, ["127.0.0.1:9"], Path(tmp))  # never contacted
        requests = [build(work.request, stream=False) for work in prepare(cfg).work()]

    async def convert() -> list[tuple[Backend, dict[str, Any]]]:
        out = []
        for index, (path, body) in enumerate(requests):
            engine = engines[index % len(engines)]
            if path.endswith("/chat"):
                chat = parse_chat(body, engine.limits)
                sampling, prompt = chat.sampling, await engine.chat_prompt(chat)
            else:
                completion = parse_completion(body, engine.limits)
                sampling = completion.sampling
                prompt = await engine.completion_prompt(completion)
            engine.check_schema(sampling)
            out.append((engine, engine._body(prompt, sampling, 0)))  # what the node sends
        return out

    return asyncio.run(convert())


def measure(
    job: str, *, nodes: int, threads: int, parallel: int, reproducible: bool = False
) -> dict[str, Any]:
    """Load the engines, send the job through them, return the figures."""
    spec = ModelSpec("smollm2", default_model_path())
    engines = [
        Backend(
            spec,
            n_threads=threads,
            n_parallel=parallel,
            n_ctx=ServeConfig.n_ctx,
            max_queue=0,
            reproducible=reproducible,
        )
        for _ in range(nodes)
    ]
    work = native_bodies(job, engines)
    pending: dict[int, queue.SimpleQueue[dict[str, Any]]] = {
        id(e): queue.SimpleQueue() for e in engines
    }
    for engine, body in work:
        pending[id(engine)].put(body)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker(engine: Backend) -> None:
        while True:
            try:
                body = pending[id(engine)].get_nowait()
            except queue.Empty:
                return
            answer = engine._server.handle_completions(body)  # in-process, whole answer
            with lock:
                answers.append(answer)

    workers = [
        threading.Thread(target=worker, args=(engine,))
        for engine in engines
        for _ in range(parallel)
    ]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    wall = time.perf_counter() - started
    tokens = sum(_generated(answer) for answer in answers)
    return {
        "job": job,
        "layout": f"{nodes}x{threads}x{parallel}",
        "reproducible": reproducible,
        "answers": len(answers),
        "requests": len(work),
        "wall_s": round(wall, 3),
        "output_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
    }


def _generated(answer: dict[str, Any]) -> int:
    """Generated tokens as the node reports them: llama.cpp counts the end-of-generation
    token, TextSynth does not (these jobs have no stop strings, so "stop" means that token)."""
    count = int(answer["usage"]["completion_tokens"])
    return count - 1 if answer["choices"][0]["finish_reason"] == "stop" else count


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_limit", description=__doc__)
    parser.add_argument("--job", default="movie_details")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument(
        "--reproducible",
        action="store_true",
        help="the node's reproducible=true: seeded prompts evaluated afresh, no prompt cache",
    )
    args = parser.parse_args(argv)
    figures = measure(
        args.job,
        nodes=args.nodes,
        threads=args.threads,
        parallel=args.parallel,
        reproducible=args.reproducible,
    )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
