"""The HTTP side: a Starlette app serving the TextSynth REST API over the engines.

Every error is a JSON body ``{"error": "<one line>"}`` with a 4xx/5xx status, and the server
keeps serving. Streaming answers use TextSynth's framing (JSON objects each followed by a
blank line), not Server-Sent Events.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    parse_chat,
    parse_completion,
    parse_json,
    parse_logprob,
    parse_tokenize,
)
from ._backend import Backend
from ._results import BackendError, Generation, Prompt

log = logging.getLogger("runner.node")

STREAM_MEDIA_TYPE = "application/json"
RETRY_AFTER_S = 1
"""What a 503 (every slot busy, the queue full) tells the client to wait, in seconds."""


def create_app(
    engines: Mapping[str, Backend],
    *,
    api_key: str | None,
    max_body_bytes: int,
    on_ready: Callable[[], None] | None = None,
) -> Starlette:
    """Build the node's ASGI app.

    Args:
        engines: the loaded models by engine id.
        api_key: the Bearer key every ``/v1`` request must carry, or None for no check.
        max_body_bytes: larger request bodies are refused with 413.
        on_ready: called once the app has started (prints ``Started.`` for ``log_start``).
    """

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise ApiError(401, "authorization: missing or wrong Bearer key")

    async def engine_and_body(request: Request) -> tuple[Backend, dict[str, Any]]:
        authorize(request)
        name = request.path_params["engine"]
        engine = engines.get(name)
        if engine is None:
            raise ApiError(404, f"engine: no engine named {name!r} (see GET /v1/engines)")
        raw = await _read_body(request, max_body_bytes)
        return engine, parse_json(raw)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "engines": list(engines),
                "slots": sum(e.n_parallel for e in engines.values()),
                "busy": sum(e.slots.running for e in engines.values()),
                "queue": sum(e.slots.waiting for e in engines.values()),
            }
        )

    async def list_engines(request: Request) -> Response:
        authorize(request)
        return JSONResponse(
            {
                "engines": [
                    {
                        "id": name,
                        "n_ctx": e.limits.n_ctx,
                        "n_vocab": e.limits.n_vocab,
                        "slots": e.n_parallel,
                        "busy": e.slots.running,
                        "queue": e.slots.waiting,
                    }
                    for name, e in engines.items()
                ]
            }
        )

    async def completions(request: Request) -> Response:
        engine, body = await engine_and_body(request)
        job = parse_completion(body, engine.limits)
        engine.check_schema(job.sampling)
        prompt = await engine.completion_prompt(job)
        return await _generation(engine, job, prompt, "completions")

    async def chat(request: Request) -> Response:
        engine, body = await engine_and_body(request)
        job = parse_chat(body, engine.limits)
        engine.check_schema(job.sampling)
        prompt = await engine.chat_prompt(job)
        return await _generation(engine, job, prompt, "chat")

    async def tokenize(request: Request) -> Response:
        engine, body = await engine_and_body(request)
        job = parse_tokenize(body)
        return JSONResponse(await engine.tokenize(job))

    async def logprob(request: Request) -> Response:
        engine, body = await engine_and_body(request)
        job = parse_logprob(body)
        admission = await engine.admit()
        try:
            return JSONResponse(await engine.logprob(job))
        finally:
            admission.release()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if on_ready is not None:
            on_ready()
        yield
        for engine in engines.values():
            await engine.aclose()

    prefix = "/v1/engines/{engine}"
    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/engines", list_engines, methods=["GET"]),
            Route(f"{prefix}/completions", completions, methods=["POST"]),
            Route(f"{prefix}/chat", chat, methods=["POST"]),
            Route(f"{prefix}/tokenize", tokenize, methods=["POST"]),
            Route(f"{prefix}/logprob", logprob, methods=["POST"]),
        ],
        exception_handlers={
            ApiError: _api_error,
            BackendError: _backend_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )


async def _generation(
    engine: Backend, job: CompletionRequest | ChatRequest, prompt: Prompt, kind: str
) -> Response:
    sampling = job.sampling
    started = time.monotonic()
    admission = await engine.admit(sampling.n)
    if sampling.stream:
        pieces = engine.stream(prompt, sampling)
        return _stream(engine, admission.release, prompt, pieces, f"{kind} stream", started)
    try:
        generations = await engine.complete(prompt, sampling)
    finally:
        admission.release()
    body = completion_body(prompt, generations, many=sampling.n > 1)
    _log_generation(engine.name, kind, body, started)
    return JSONResponse(body)


def _log_generation(name: str, kind: str, body: Mapping[str, Any], started: float) -> None:
    log.info(
        "%s %s: %d prompt tokens, %d generated in %.2f s (%s)",
        name,
        kind,
        body["input_tokens"],
        body["output_tokens"],
        time.monotonic() - started,
        body["finish_reason"],
    )


def completion_body(prompt: Prompt, generations: list[Generation], *, many: bool) -> dict[str, Any]:
    """The completions/chat answer. ``text`` is a list when ``n`` > 1; ``finish_reason`` is
    ``length`` if any completion hit ``max_tokens``."""
    cut = any(g.finish_reason == "length" for g in generations)
    return {
        "text": [g.text for g in generations] if many else generations[0].text,
        "reached_end": True,
        "truncated_prompt": prompt.truncated,
        "input_tokens": len(prompt.tokens),
        "output_tokens": sum(g.output_tokens for g in generations),
        "finish_reason": "length" if cut else "stop",
    }


def _stream(
    engine: Backend,
    release: Callable[[], None],
    prompt: Prompt,
    pieces: AsyncIterator[str | Generation],
    kind: str,
    started: float,
) -> Response:
    """A streamed answer; holds its admission until the response ends, however it ends."""

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for piece in pieces:
                if isinstance(piece, Generation):
                    final = completion_body(prompt, [piece], many=False)
                    _log_generation(engine.name, kind, final, started)
                    yield _frame(final | {"text": ""})
                    return
                yield _frame({"text": piece, "reached_end": False})
        except (BackendError, ApiError, httpx.HTTPError) as exc:  # failed mid-generation
            log.error("%s: generation failed: %s", engine.name, exc)
            yield _frame({"error": f"generation failed: {exc}"})
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()  # cancels the sequence when the client left early

    return _ClosingStream(chunks(), on_close=release, media_type=STREAM_MEDIA_TYPE)


class _ClosingStream(StreamingResponse):
    """A StreamingResponse that runs ``on_close`` when it ends: normally, on a client
    disconnect, on an error, or even if the body was never started."""

    def __init__(
        self, body: AsyncIterator[bytes], *, on_close: Callable[[], None], media_type: str
    ) -> None:
        super().__init__(body, media_type=media_type)
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()  # synchronous on purpose: it must run even when cancelled
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()


def _frame(chunk: Mapping[str, Any]) -> bytes:
    return json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body: {declared} bytes is over the limit of {limit}")
    parts: list[bytes] = []
    size = 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise ApiError(413, f"request body: over the limit of {limit} bytes")
            parts.append(part)
    except ClientDisconnect:
        # The client hung up mid-body: nobody is left to answer, and it is not our fault.
        log.info(
            "%s %s: client left before sending its whole body", request.method, request.url.path
        )
        raise ApiError(400, "request body: the client hung up before sending it all") from None
    return b"".join(parts)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)


async def _backend_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse({"error": f"engine: {exc}"}, status_code=500)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
