"""One model: llama.cpp's own server engine (``xllamacpp``), driven over loopback.

``xllamacpp.Server`` loads the model in this process and runs llama.cpp's C++ server loop:
``n_parallel`` sequences decoded together in one batch (continuous batching), each with
its own slot of ``n_ctx`` tokens. It also listens on a private 127.0.0.1 port with
llama-server's native endpoints, guarded by a random key that never leaves the process.
:class:`Engine` speaks to that port: ``/tokenize`` and ``/apply-template`` to build the
prompt (so truncation and token counts are exact), ``/completion`` to generate (streamed or
whole, one request per sequence). Closing a streamed HTTP exchange cancels its sequence.

TextSynth's ``logprob`` needs the probability of given tokens. llama-server has no prompt
log-probabilities, so the continuation is *generated* under a grammar that allows exactly
its tokens (``<[id]>`` terminals), and each step reports the log-probability of the token
under the model's raw next-token distribution (``n_probs``; ``post_sampling_probs`` off):
the same quantity a full evaluation gives, checked against fixtures recorded with the
previous node (``tests/node/fixtures/logprob.json``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema

from .._schema_refs import dangling_refs
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
from ._slots import Admission, Slots

log = logging.getLogger("runner.node")

TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=600.0)
"""Loopback to our own engine: a long read allows for a queued request."""


@dataclass(frozen=True)
class Prompt:
    """Prompt tokens ready for the model.

    Attributes:
        tokens: what the model evaluates.
        truncated: the beginning of the prompt was dropped to fit the context.
    """

    tokens: list[int]
    truncated: bool = False


@dataclass(frozen=True)
class Outcome:
    """One finished generation.

    Attributes:
        text: the generated text, without the stop string that ended it.
        output_tokens: tokens generated (the end-of-generation token is not counted).
        finish_reason: ``stop`` (end token or stop string) or ``length`` (max_tokens).
    """

    text: str
    output_tokens: int
    finish_reason: str


class EngineError(Exception):
    """llama.cpp's server failed a request we built (not the caller's fault)."""


class Engine:
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
        self._plain_token: int = plain[0]  # a one-character token (see _distribution_step)
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
        tokens = await self._tokenize(request.prompt, special=True, parse_special=False)
        return self._fit(tokens, room=self.limits.n_ctx - request.sampling.max_tokens)

    async def chat_prompt(self, request: ChatRequest) -> Prompt:
        """Apply the model's chat template and tokenize, dropping the beginning if needed."""
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        for index, content in enumerate(request.messages):
            messages.append({"role": "assistant" if index % 2 else "user", "content": content})
        answer = await self._http.post("/apply-template", json={"messages": messages})
        if answer.status_code != 200:
            raise ApiError(400, f"messages: the chat template refused them: {_message(answer)}")
        text = answer.json()["prompt"]
        tokens = await self._tokenize(text, special=False, parse_special=True)
        return self._fit(tokens, room=self.limits.n_ctx - request.sampling.max_tokens)

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

    async def complete(self, prompt: Prompt, sampling: Sampling) -> list[Outcome]:
        """Generate ``sampling.n`` completions, decoded side by side in the slots."""
        bodies = [self._body(prompt, sampling, index) for index in range(sampling.n)]
        answers = await asyncio.gather(*(self._post("/completion", b) for b in bodies))
        return [_outcome(answer) for answer in answers]

    async def stream(self, prompt: Prompt, sampling: Sampling) -> AsyncIterator[str | Outcome]:
        """Generate one completion: yields text pieces as they become final, then the
        :class:`Outcome`. Closing the iterator early cancels the sequence."""
        body = self._body(prompt, sampling, 0) | {"stream": True}
        async with self._http.stream("POST", "/completion", json=body) as answer:
            if answer.status_code != 200:
                await answer.aread()
                raise _failure(answer)
            async for line in answer.aiter_lines():
                if not line.startswith("data: "):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise EngineError(f"generation failed: {_error_text(chunk)}")
                if chunk.get("stop"):
                    if chunk.get("content"):
                        yield chunk["content"]
                    yield _outcome(chunk)
                    return
                if chunk.get("content"):
                    yield chunk["content"]
        raise EngineError("generation ended without its final chunk")

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

    # --- tokenize and logprob

    async def tokenize(self, request: TokenizeRequest) -> dict[str, Any]:
        """The ``tokenize`` answer: token ids, and each token's bytes in base64 if asked."""
        body = {"content": request.text, "add_special": False, "parse_special": False}
        if not request.base64:
            answer = await self._post("/tokenize", body)
            return {"tokens": answer["tokens"]}
        answer = await self._post("/tokenize", body | {"with_pieces": True})
        pieces = answer["tokens"]
        return {
            "tokens": [p["id"] for p in pieces],
            "token_content": [base64.b64encode(_piece_bytes(p["piece"])).decode() for p in pieces],
        }

    async def logprob(self, request: LogprobRequest) -> dict[str, Any]:
        """The ``logprob`` answer: the continuation's log-probability given the context."""
        pieces = (
            await self._post(
                "/tokenize",
                {"content": request.continuation, "add_special": False, "with_pieces": True},
            )
        )["tokens"]
        continuation = [piece["id"] for piece in pieces]
        if not continuation:
            raise ApiError(400, "continuation: has no tokens")
        if len(continuation) >= self.limits.n_ctx:
            raise ApiError(400, f"continuation: longer than the context ({self.limits.n_ctx})")
        context = await self._tokenize(request.context, special=True)
        prompt = self._fit(context, room=self.limits.n_ctx - len(continuation))
        if all(isinstance(piece["piece"], str) for piece in pieces):
            steps = await self._forced_steps(prompt.tokens, continuation)
        else:
            # llama.cpp's grammar rejects every token after one that is only part of a
            # UTF-8 character, and reports no probability for such a token: score token by
            # token, reading a partial token's log-probability from the whole distribution.
            steps = []
            for index, piece in enumerate(pieces):
                prefix = prompt.tokens + continuation[:index]
                if isinstance(piece["piece"], str):
                    steps += await self._forced_steps(prefix, [piece["id"]])
                else:
                    steps.append(await self._distribution_step(prefix, piece["id"]))
        return {
            "logprob": sum(logprob for logprob, _ in steps),
            "num_tokens": len(continuation),
            "is_greedy": all(greedy for _, greedy in steps),
            "input_tokens": len(prompt.tokens) + len(continuation),
        }

    async def _forced_steps(self, prompt: list[int], tokens: list[int]) -> list[tuple[float, bool]]:
        """Generate exactly ``tokens`` after ``prompt`` (a grammar of token terminals) and
        return each one's log-probability and whether it was the most likely token."""
        body = {
            "prompt": prompt,
            "n_predict": len(tokens),
            "grammar": "root ::= " + " ".join(f"<[{token}]>" for token in tokens),
            "temperature": 0.0,
            "samplers": ["temperature"],
            "n_probs": 1,
            "post_sampling_probs": False,  # the model's own distribution, not the sampler's
            "ignore_eos": True,
            "cache_prompt": True,
        }
        steps = (await self._post("/completion", body)).get("completion_probabilities") or []
        if [step.get("id") for step in steps] != tokens:
            raise EngineError(f"logprob: the engine scored {len(steps)} of {len(tokens)} tokens")
        return [(float(s["logprob"]), s["top_logprobs"][0]["id"] == s["id"]) for s in steps]

    async def _distribution_step(self, prompt: list[int], token: int) -> tuple[float, bool]:
        """The log-probability of ``token`` after ``prompt`` from the whole next-token
        distribution (a plain one-character token is generated to carry it)."""
        body = {
            "prompt": prompt,
            "n_predict": 1,
            "logit_bias": [[self._plain_token, 100.0]],
            "temperature": 0.0,
            "samplers": ["logit_bias", "temperature"],
            "n_probs": self.limits.n_vocab,
            "post_sampling_probs": False,
            "ignore_eos": True,
            "cache_prompt": True,
        }
        steps = (await self._post("/completion", body)).get("completion_probabilities") or []
        if len(steps) != 1:
            raise EngineError("logprob: the engine returned no distribution")
        ranked = steps[0]["top_logprobs"]
        for entry in ranked:
            if entry["id"] == token:
                return float(entry["logprob"]), ranked[0]["id"] == token
        raise EngineError(f"logprob: token {token} missing from the distribution")

    # --- helpers

    async def _tokenize(
        self, text: str, *, special: bool, parse_special: bool = False
    ) -> list[int]:
        body = {"content": text, "add_special": special, "parse_special": parse_special}
        tokens: list[int] = (await self._post("/tokenize", body))["tokens"]
        return tokens

    async def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self._http.post(path, json=body)
        if answer.status_code != 200:
            raise _failure(answer)
        result: dict[str, Any] = answer.json()
        return result

    def _fit(self, tokens: list[int], *, room: int) -> Prompt:
        """Keep the last ``room`` tokens (and the BOS token, if the model uses one)."""
        if not tokens:
            tokens = list(self._empty)
        if len(tokens) <= room:
            return Prompt(tokens)
        head = self._bos if tokens[: len(self._bos)] == self._bos else []
        return Prompt(head + tokens[len(tokens) - (room - len(head)) :], truncated=True)


def _outcome(answer: Mapping[str, Any]) -> Outcome:
    """An Outcome from llama-server's final ``/completion`` object."""
    stop_type = answer.get("stop_type", "")
    count = int(answer.get("tokens_predicted", 0))
    if stop_type == "eos":
        count -= 1  # llama.cpp counts the end-of-generation token; TextSynth does not
    return Outcome(
        text=str(answer.get("content", "")),
        output_tokens=max(0, count),
        finish_reason="length" if stop_type == "limit" else "stop",
    )


def _failure(answer: httpx.Response) -> Exception:
    """A non-200 answer of the engine: the caller's fault (4xx) or ours."""
    message = _message(answer)
    if 400 <= answer.status_code < 500:
        field = "grammar" if "grammar" in message else "request"
        return ApiError(400, f"{field}: llama.cpp refused it: {message}")
    return EngineError(f"llama.cpp answered {answer.status_code}: {message}")


def _message(answer: httpx.Response) -> str:
    try:
        return _error_text(answer.json())
    except ValueError:
        return answer.text[:200]


def _error_text(body: Any) -> str:
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message", error)
    return " ".join(str(error).split())[:300]


def _piece_bytes(piece: str | list[int]) -> bytes:
    """A token's bytes: llama-server gives a string, or a list of bytes when the token
    is not valid UTF-8 on its own (part of a multi-byte character)."""
    return piece.encode() if isinstance(piece, str) else bytes(piece)
