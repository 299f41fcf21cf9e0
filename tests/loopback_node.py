"""A tiny TextSynth-speaking HTTP server on 127.0.0.1 for CLI tests that need no model.

It answers `/chat` and `/completions` instantly with a JSON object built from the prompt,
counts the prompts it saw, and refuses (HTTP ``refuse_status``, 500 unless set) prompts
containing any string in ``refuse``. It tokenizes a token per word (counted apart, in
``tokenized``) and, when its ``context`` is set, says it in ``GET /v1/engines`` as our node
does. `/logprob` scores a continuation with :func:`logprob_of`, a pure function of the
context and the continuation (so a choice job over it is reproducible, and a test can say
which label wins); each label's request counts its context in ``seen`` and is refused like a
prompt.
"""

from __future__ import annotations

import hashlib
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
    refuse_status: int = 500  # the status of a refusal
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


def logprob_of(context: str, continuation: str) -> tuple[float, int]:
    """The log-probability and token count the node gives ``continuation`` after
    ``context``: a token per word, each worth between -0.5 and -1.5 by a hash of the context
    and the word (so it changes with both, the same every time)."""
    words = continuation.split() or [continuation]
    total = 0.0
    for word in words:
        digest = hashlib.sha256(f"{context}\x00{word}".encode()).digest()
        total -= 0.5 + digest[0] / 255
    return total, len(words)


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
            if self.path.endswith("/logprob"):
                self._logprob(body)
                return
            prompt = body.get("prompt") or body["messages"][-1]
            node.seen[prompt] += 1
            if any(r in prompt for r in node.refuse):
                payload, status = {"error": "refused"}, node.refuse_status
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

        def _logprob(self, body: dict[str, object]) -> None:
            context, continuation = body.get("context"), body.get("continuation")
            if not isinstance(context, str) or not isinstance(continuation, str):
                self._send(400, {"error": "context and continuation must be strings"})
                return
            if not continuation:
                self._send(400, {"error": "continuation must not be empty"})
                return
            node.seen[context] += 1
            if any(r in context for r in node.refuse):
                self._send(node.refuse_status, {"error": "refused"})
                return
            logprob, num_tokens = logprob_of(context, continuation)
            payload = {
                "logprob": logprob,
                "num_tokens": num_tokens,
                "is_greedy": False,
                "input_tokens": len(context.split()) + num_tokens,
            }
            self._send(200, payload)

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
