"""One model: llama.cpp's own server engine (``xllamacpp``), driven over loopback.

``xllamacpp.Server`` loads the model in this process and runs llama.cpp's C++ server loop:
``n_parallel`` sequences decoded together in one batch (continuous batching), each with
its own slot of ``n_ctx`` tokens. It also listens on a private 127.0.0.1 port with
llama-server's native endpoints, guarded by a random key that never leaves the process.
:class:`Backend` speaks to that port: ``/tokenize`` and ``/apply-template`` to build the
prompt (so truncation and token counts are exact), ``/completion`` to generate (streamed or
whole, one request per sequence). Closing a streamed HTTP exchange cancels its sequence.
``tokenize`` and ``logprob`` are in :mod:`runner.node._scoring`; the result types and the
reading of llama-server's answers in :mod:`runner.node._results`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import jsonschema

from .._schema_refs import dangling_refs
from . import _scoring
from ._api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    Limits,
    LogprobRequest,
    Sampling,
    TokenizeRequest,
)
from ._cfg import ModelSpec
from ._results import (
    BackendError,
    Generation,
    Prompt,
    error_text,
    failure,
    message,
    read_generation,
)
from ._slots import Admission, Slots

log = logging.getLogger("runner.node")

TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=600.0)
"""Loopback to our own engine: a long read allows for a queued request."""


class Backend:
    """One model served under the engine id ``spec.name``.

    Args:
        spec: the model's name and GGUF file.
        n_threads: llama.cpp threads (generation and prompt processing).
        n_parallel: sequences decoded at once (slots).
        n_ctx: context per sequence in tokens (the model's context is ``n_ctx × n_parallel``).
        max_queue: requests that may wait while every slot is busy; more get 503.
        reproducible: evaluate a seeded request's prompt afresh instead of reusing a slot's
            cached prefix. A prefix reused from the cache is computed in other batch shapes
            than a whole prompt, which moves the logits by rounding and, now and then, the
            sampled text; afresh, the same request and seed give the same text on an idle
            node (measured in docs/node.md, "Determinism").

    Raises:
        ValueError: llama.cpp could not load the file.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        n_threads: int,
        n_parallel: int,
        n_ctx: int,
        max_queue: int,
        reproducible: bool = True,
    ) -> None:
        import xllamacpp  # the node extra; imported here so the config works without it

        self.name = spec.name
        self.reproducible = reproducible
        self.slots = Slots(n_parallel, max_queue)
        self._key = secrets.token_urlsafe(24)
        params = xllamacpp.CommonParams()
        params.model.path = str(spec.path)
        params.n_parallel = n_parallel
        params.n_ctx = n_ctx * n_parallel
        params.cpuparams.n_threads = n_threads
        params.cpuparams_batch.n_threads = n_threads
        params.api_keys = [self._key]
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # any free port, on loopback only
        params.ui = False
        # Flash attention changes the numerics enough to move log-probabilities by up to
        # 0.1 per token against a plain evaluation; TextSynth's logprob must stay exact.
        params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.verbosity = -1  # llama.cpp's per-request lines would drown the node's log
        # llama-server keeps idle slots' prompt states in a host-memory cache of up to 8 GiB
        # by default: the node's memory would grow with every new prompt for hours. The
        # slots' own caches (cache_prompt) are enough for prompts that share a beginning.
        params.cache_ram_mib = 0
        params.cache_idle_slots = False
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:  # the binding raises RuntimeError/ValueError on a bad file
            raise ValueError(f"llama.cpp cannot load {spec.path}: {exc}") from exc
        self.url = str(self._server.listening_address)
        headers = {"Authorization": f"Bearer {self._key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30, trust_env=False) as c:
            meta = c.get("/v1/models").raise_for_status().json()["data"][0]["meta"]
            props = c.get("/props").raise_for_status().json()
            bos = c.post("/tokenize", json={"content": "", "add_special": True}).json()["tokens"]
            eos = c.post(
                "/tokenize", json={"content": props.get("eos_token", ""), "parse_special": True}
            ).json()["tokens"]
            plain = c.post("/tokenize", json={"content": "a"}).json()["tokens"]
        self.limits = Limits(n_ctx=n_ctx, n_vocab=int(meta["n_vocab"]))
        self.has_chat_template = bool(props.get("chat_template"))
        self._bos: list[int] = bos  # [] when the model adds no BOS token
        self._empty = bos or eos[-1:] or [0]  # what an empty prompt becomes
        self.plain_token: int = plain[0]
        """A one-character token (see :func:`runner.node._scoring._distribution_step`)."""
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=TIMEOUT,
            trust_env=False,  # a proxy in the environment must never see this traffic
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._schemas: dict[str, None] = {}

    @property
    def n_parallel(self) -> int:
        """Sequences decoded at once."""
        return self.slots.size

    async def admit(self, sequences: int = 1) -> Admission:
        """Reserve room for ``sequences``; raises ApiError 503 when the queue is full."""
        admission = self.slots.admit(sequences)
        if admission is None:
            raise ApiError(
                503,
                f"engine {self.name!r}: busy ({self.slots.running} running, "
                f"{self.slots.waiting} waiting, max_queue {self.slots.max_queue}); retry later",
            )
        return admission

    async def aclose(self) -> None:
        """Close the loopback client; the model is freed with the process."""
        await self._http.aclose()

    # --- building the prompt

    async def completion_prompt(self, request: CompletionRequest) -> Prompt:
        """Tokenize a completions prompt, dropping its beginning if it does not fit."""
        tokens = await self.token_ids(request.prompt, special=True, parse_special=False)
        return self.fit(tokens, room=self.limits.n_ctx - request.sampling.max_tokens)

    async def chat_prompt(self, request: ChatRequest) -> Prompt:
        """Apply the model's chat template and tokenize, dropping the beginning if needed."""
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        for index, content in enumerate(request.messages):
            messages.append({"role": "assistant" if index % 2 else "user", "content": content})
        answer = await self._http.post("/apply-template", json={"messages": messages})
        if answer.status_code != 200:
            raise ApiError(400, f"messages: the chat template refused them: {message(answer)}")
        text = answer.json()["prompt"]
        tokens = await self.token_ids(text, special=False, parse_special=True)
        return self.fit(tokens, room=self.limits.n_ctx - request.sampling.max_tokens)

    def check_schema(self, sampling: Sampling) -> None:
        """Refuse a ``schema`` that is not a JSON Schema or has a ``$ref`` that goes nowhere.

        (llama.cpp's converter turns an unresolvable reference into no constraint at all.)

        Raises:
            ApiError: 400 naming the problem.
        """
        if sampling.schema is None:
            return
        key = json.dumps(sampling.schema, sort_keys=True)
        if key in self._schemas:
            return
        schema = sampling.schema
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ApiError(400, f"schema: not a valid JSON Schema: {exc.message}") from exc
        dangling = dangling_refs(schema)
        if dangling:
            raise ApiError(400, f"schema: $ref {dangling[0]!r} does not resolve")
        if len(self._schemas) >= 64:
            self._schemas.pop(next(iter(self._schemas)))
        self._schemas[key] = None

    # --- generation

    async def complete(self, prompt: Prompt, sampling: Sampling) -> list[Generation]:
        """Generate ``sampling.n`` completions, decoded side by side in the slots."""
        bodies = [self._body(prompt, sampling, index) for index in range(sampling.n)]
        answers = await asyncio.gather(*(self.post("/completion", b) for b in bodies))
        return [read_generation(answer) for answer in answers]

    async def stream(self, prompt: Prompt, sampling: Sampling) -> AsyncIterator[str | Generation]:
        """Generate one completion: yields text pieces as they become final, then the
        :class:`Generation`. Closing the iterator early cancels the sequence."""
        body = self._body(prompt, sampling, 0) | {"stream": True}
        async with self._http.stream("POST", "/completion", json=body) as answer:
            if answer.status_code != 200:
                await answer.aread()
                raise failure(answer)
            async for line in _lines(answer):
                if not line.startswith("data: "):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise BackendError(f"generation failed: {error_text(chunk)}")
                if chunk.get("stop"):
                    if chunk.get("content"):
                        yield chunk["content"]
                    yield read_generation(chunk)
                    return
                if chunk.get("content"):
                    yield chunk["content"]
        raise BackendError("generation ended without its final chunk")

    def _body(self, prompt: Prompt, sampling: Sampling, index: int) -> dict[str, Any]:
        seed = (sampling.seed + index) % 2**31 if sampling.seed else secrets.randbelow(2**31)
        body: dict[str, Any] = {
            "prompt": prompt.tokens,
            "n_predict": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "min_p": 0.0,
            "typical_p": sampling.typical_p,
            "repeat_penalty": sampling.repetition_penalty,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
            "seed": seed,
            "stop": list(sampling.stop),
            "cache_prompt": not (self.reproducible and sampling.seed),
        }
        if sampling.logit_bias:
            body["logit_bias"] = [[token, bias] for token, bias in sampling.logit_bias.items()]
        if sampling.schema is not None:
            body["json_schema"] = sampling.schema
        elif sampling.grammar is not None:
            body["grammar"] = sampling.grammar
        return body

    # --- tokenize and logprob (runner.node._scoring)

    async def tokenize(self, request: TokenizeRequest) -> dict[str, Any]:
        """The ``tokenize`` answer: token ids, and each token's bytes in base64 if asked."""
        return await _scoring.tokenize(self, request)

    async def logprob(self, request: LogprobRequest) -> dict[str, Any]:
        """The ``logprob`` answer: the continuation's log-probability given the context."""
        return await _scoring.logprob(self, request)

    # --- the loopback: what the prompt builders and runner.node._scoring call

    async def token_ids(
        self, text: str, *, special: bool, parse_special: bool = False
    ) -> list[int]:
        """``text``'s tokens (``special``: with the BOS token the model adds, if any)."""
        body = {"content": text, "add_special": special, "parse_special": parse_special}
        tokens: list[int] = (await self.post("/tokenize", body))["tokens"]
        return tokens

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to llama-server's ``path``; a non-200 answer raises (see
        :func:`runner.node._results.failure`)."""
        answer = await self._http.post(path, json=body)
        if answer.status_code != 200:
            raise failure(answer)
        result: dict[str, Any] = answer.json()
        return result

    def fit(self, tokens: list[int], *, room: int) -> Prompt:
        """Keep the last ``room`` tokens (and the BOS token, if the model uses one)."""
        if not tokens:
            tokens = list(self._empty)
        if len(tokens) <= room:
            return Prompt(tokens)
        head = self._bos if tokens[: len(self._bos)] == self._bos else []
        return Prompt(head + tokens[len(tokens) - (room - len(head)) :], truncated=True)


async def _lines(answer: httpx.Response) -> AsyncIterator[str]:
    """The lines of a server-sent-event stream, cut at ``\n`` alone. (httpx's
    ``aiter_lines`` also cuts at U+0085 and U+2028, which JSON leaves unescaped: a prompt
    holding one, echoed in the final event, would break that event in two.)"""
    rest = ""
    async for text in answer.aiter_text():
        *lines, rest = (rest + text).split("\n")
        for line in lines:
            yield line.removesuffix("\r")
    if rest:
        yield rest
