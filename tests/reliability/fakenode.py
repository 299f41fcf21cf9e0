"""A controllable fake TextSynth node on 127.0.0.1, for fault tests with real processes.

Run as a process (``python -m tests.reliability.fakenode --port 0 --log requests.jsonl``) so a
test can SIGKILL it, SIGSTOP it or restart it on the same port; it prints ``READY <port>``
once it listens. Standard library only, so it starts in a few tens of milliseconds.

It answers ``/v1/engines/{engine}/chat`` and ``/completions`` with a JSON object built from
the first quoted string of the prompt (valid for ``movie_details.schema.json``), streamed in
TextSynth framing when asked. Every generation request is logged *as it arrives* to the log
file, one JSON line (``t``, ``pid``, ``prompt``, ``title``, ``probe``, ``fault``), so a test
can tell what was sent even to a node it later killed; an answer the client hung up on adds a
line ``{"aborted": prompt}``.

Behaviour is set at start (``--behaviour JSON``) and changed while it runs with
``POST /_control`` (a JSON object merged into the behaviour):

- ``delay``: seconds before the answer starts; ``chunk_delay``: seconds between stream chunks.
- ``faults``: a list consumed one per generation request: ``"500"``, ``"429"`` (an error
  status with a JSON error body), ``"busy"`` (503 with ``Retry-After: <retry_after>``, as our
  node answers when every slot and its queue are taken), ``"malformed"`` (200 with an HTML
  body), ``"truncated"`` (a stream cut off mid-chunk; a plain answer cut off before its
  promised length),
  ``"wrongjson"`` (200 with JSON that is not an answer), ``"stall"`` (a stream that sends one
  chunk, then nothing for ``stall_hold`` seconds), ``"ok"``.
- ``refuse``: substrings; a prompt holding one always gets ``refuse_status`` (default 500:
  a "bad row"; 400: a bad request, as a node answers a request it cannot serve).
- ``echo_auth``: error bodies quote the request's Authorization header (a hostile node).
- ``retry_after``: the ``Retry-After`` header of ``"busy"`` answers (default ``"1"``).
- ``slots``: when set, ``GET /health`` says it (``{"engines": ["smollm2"], "slots": N}``), as
  our node does; by default it says nothing about slots, like ts_server.
- ``api_key_env`` (start only, a variable name): requests must carry that Bearer key, else 401.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STALL_HOLD = 20.0  # the most a stalled answer holds its connection (bounded on purpose)
_TITLE = re.compile(r'"([^"]+)"')


class State:
    """The node's behaviour and its request log, shared by the handler threads."""

    def __init__(self, behaviour: dict[str, Any], log_path: str | None, api_key: str | None):
        self.lock = threading.Lock()
        self.behaviour: dict[str, Any] = {
            "delay": 0.0,
            "chunk_delay": 0.0,
            "faults": [],
            "refuse": [],
            "refuse_status": 500,
            "echo_auth": False,
            "stall_hold": STALL_HOLD,
            "retry_after": "1",
            "slots": None,
        } | behaviour
        self.api_key = api_key
        self.log_fd = (
            os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if log_path else None
        )
        self.served = 0

    def next_fault(self) -> str | None:
        with self.lock:
            faults = self.behaviour["faults"]
            return str(faults.pop(0)) if faults else None

    def log(self, entry: dict[str, Any]) -> None:
        if self.log_fd is not None:
            os.write(self.log_fd, (json.dumps(entry) + "\n").encode())


def answer_for(prompt: str) -> str:
    """The fake answer: a movie_details object naming the prompt's first quoted string."""
    match = _TITLE.search(prompt)
    title = match.group(1) if match else prompt[:40] or "untitled"
    return json.dumps(
        {
            "title": title,
            "release_year": 2000,
            "director": "A. Director",
            "genre": "Drama",
            "main_actors": ["A. Actor", "B. Actor"],
        }
    )


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # every answer ends with the connection: simple framing

        def log_message(self, *args: object) -> None:
            pass

        def _send(
            self,
            status: int,
            payload: Any,
            *,
            raw: bytes | None = None,
            length: int | None = None,
            headers: dict[str, str] | None = None,
        ) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            if state.behaviour["echo_auth"]:
                message += f" (you sent Authorization: {self.headers.get('Authorization')})"
            self._send(status, {"error": message})

        def do_GET(self) -> None:
            if self.path == "/health":
                health: dict[str, Any] = {"status": "ok", "pid": os.getpid()}
                if state.behaviour["slots"] is not None:
                    health |= {"engines": ["smollm2"], "slots": state.behaviour["slots"]}
                self._send(200, health)
            elif self.path == "/_control":
                with state.lock:
                    self._send(200, {**state.behaviour, "served": state.served})
            elif self.path == "/v1/engines":
                self._send(200, {"engines": [{"id": "smollm2", "n_ctx": 2048}]})
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path == "/_control":
                with state.lock:
                    state.behaviour.update(json.loads(raw))
                self._send(200, {"ok": True})
                return
            if not re.fullmatch(r"/v1/engines/[^/]+/(chat|completions)", self.path):
                self._send(404, {"error": f"no route {self.path}"})
                return
            expected = f"Bearer {state.api_key}"
            if state.api_key is not None and self.headers.get("Authorization") != expected:
                self._error(401, "authorization: missing or wrong Bearer key")
                return
            body = json.loads(raw)
            prompt = body.get("prompt") or (body.get("messages") or [""])[-1]
            probe = body.get("max_tokens") == 2 and prompt == "Hello"
            fault = None if probe else state.next_fault()
            match = _TITLE.search(prompt)
            state.log(
                {
                    "t": time.time(),
                    "pid": os.getpid(),
                    "prompt": prompt,
                    "title": match.group(1) if match else None,
                    "probe": probe,
                    "fault": fault,
                }
            )
            try:
                self._generate(body, prompt, fault)
            except (BrokenPipeError, ConnectionResetError):  # the client hung up mid-answer
                state.log({"t": time.time(), "pid": os.getpid(), "aborted": prompt})

        def _generate(self, body: dict[str, Any], prompt: str, fault: str | None) -> None:
            behaviour = state.behaviour
            if fault in ("500", "429", "503"):
                self._error(int(fault), "overloaded")
                return
            if fault == "busy":
                retry_after = str(behaviour["retry_after"])
                self._send(503, {"error": "busy"}, headers={"Retry-After": retry_after})
                return
            if any(r in prompt for r in behaviour["refuse"]):
                self._error(behaviour["refuse_status"], "refused: this row always fails here")
                return
            time.sleep(float(behaviour["delay"]))
            if fault == "malformed":
                self._send(200, None, raw=b"<html><body>502 Bad Gateway</body></html>")
                return
            if fault == "wrongjson":  # JSON, but not an answer
                self._send(200, {"txt": 42, "reached_end": "yes"})
                return
            text = answer_for(prompt)
            words = text.split(" ")
            with state.lock:
                state.served += 1
            final = {
                "text": "",
                "reached_end": True,
                "input_tokens": 10,
                "output_tokens": len(words),
                "finish_reason": "stop",
            }
            if not body.get("stream"):
                data = json.dumps(final | {"text": text}).encode()
                if fault == "truncated":  # promises the whole body, sends half, hangs up
                    self._send(200, None, raw=data[: len(data) // 2], length=len(data))
                    return
                self._send(200, None, raw=data)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()  # no length: the stream ends when the connection closes
            for i, word in enumerate(words):
                piece = word if i == len(words) - 1 else word + " "
                chunk = json.dumps({"text": piece, "reached_end": False}).encode() + b"\n\n"
                if fault == "truncated" and i == len(words) // 2:
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    return
                self.wfile.write(chunk)
                self.wfile.flush()
                if fault == "stall":
                    time.sleep(float(behaviour["stall_hold"]))
                    return
                if behaviour["chunk_delay"]:
                    time.sleep(float(behaviour["chunk_delay"]))
            self.wfile.write(json.dumps(final).encode() + b"\n\n")

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.fakenode")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", help="append one JSON line per generation request here")
    parser.add_argument("--behaviour", default="{}", help="initial behaviour (JSON object)")
    parser.add_argument("--api-key-env", help="require the Bearer key held by this variable")
    args = parser.parse_args(argv)
    api_key = os.environ[args.api_key_env] if args.api_key_env else None
    state = State(json.loads(args.behaviour), args.log, api_key)
    server = Server(("127.0.0.1", args.port), make_handler(state))
    print(f"READY {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
