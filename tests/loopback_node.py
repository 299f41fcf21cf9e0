"""A tiny TextSynth-speaking HTTP server on 127.0.0.1 for CLI tests that need no model.

It answers `/chat` and `/completions` instantly with a JSON object built from the prompt,
counts the prompts it saw, and refuses (HTTP 500) prompts containing any string in
``refuse``. It tokenizes a token per word (counted apart, in ``tokenized``) and, when its
``context`` is set, says it in ``GET /v1/engines`` as our node does.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class LoopbackNode:
    port: int = 0
    seen: Counter[str] = field(default_factory=Counter)
    refuse: set[str] = field(default_factory=set)
    tokenized: int = 0  # tokenize requests (the pre-flight's), not in ``seen``
    context: int | None = None  # said by GET /v1/engines (engine smollm2) when set

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _answer(prompt: str) -> str:
    match = re.search(r'"([^"]+)"', prompt)
    title = match.group(1) if match else prompt[:40]
    return json.dumps(
        {
            "title": title,
            "release_year": 2000,
            "director": "A. Director",
            "genre": "Drama",
            "main_actors": ["A. Actor"],
        }
    )


@contextmanager
def loopback_node() -> Iterator[LoopbackNode]:
    node = LoopbackNode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/v1/engines" and node.context is not None:
                self._send(200, {"engines": [{"id": "smollm2", "n_ctx": node.context}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/tokenize":  # llama.cpp's: not spoken here
                self._send(404, {"error": "not found"})
                return
            if self.path.endswith("/tokenize"):  # the pre-flight's count: a token a word
                node.tokenized += 1
                self._send(200, {"tokens": list(range(len(body["text"].split())))})
                return
            prompt = body.get("prompt") or body["messages"][-1]
            node.seen[prompt] += 1
            if any(r in prompt for r in node.refuse):
                payload, status = {"error": "refused"}, 500
            else:
                text = _answer(prompt)
                payload = {
                    "text": text,
                    "reached_end": True,
                    "input_tokens": 5,
                    "output_tokens": len(text.split()),
                }
                status = 200
            self._send(status, payload, stream=bool(body.get("stream")))

        def _send(self, status: int, payload: object, *, stream: bool = False) -> None:
            data = json.dumps(payload).encode()
            if stream and status == 200:
                data += b"\n\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    node.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
